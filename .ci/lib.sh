# Shared steps of the interop scripts: source it after `cd` to the repository root.
# Provides: start_ferry, fail, openssl_ca, openssl_device, start_consumer, finish_consumer.

bin=${CARGO_TARGET_DIR:-target}/debug/ferry
[ -x "$bin" ] || cargo build --bin ferry
ci_dir=$(pwd)/.ci
work=$(mktemp -d)
mgmt=http://127.0.0.1:28080/v1
ferry_pid=
consumer_pid=
cleanup() {
  [ -n "$ferry_pid" ] && kill "$ferry_pid" 2>/dev/null || true
  [ -n "$consumer_pid" ] && kill "$consumer_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "${name:-interop} FAILED: $*"; echo "--- ferry log"; tail -n 40 "$work/ferry.log"; exit 1; }

# start_ferry: runs the debug build on Hono's default ports with its data in $work/data and
# waits until the Management API answers.
start_ferry() {
  "$bin" run --data-dir "$work/data" >"$work/ferry.out" 2>"$work/ferry.log" &
  ferry_pid=$!
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$mgmt/tenants/none" || true)" = "404" ] && return
    sleep 0.2
  done
  fail "the Management API did not answer"
}

# openssl_ca NAME SUBJECT: a P-256 CA in $work/NAME-cert.pem and $work/NAME-key.pem.
openssl_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$work/$1-key.pem" -out "$work/$1-cert.pem" -subj "$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

# openssl_device NAME CA SUBJECT: a client certificate of CA in $work/NAME-cert.pem (+ -key.pem).
openssl_device() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$work/$1-key.pem" -out "$work/$1.csr" -subj "$3" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
    >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA "$work/$2-cert.pem" -CAkey "$work/$2-key.pem" \
    -CAcreateserial -days 7 -extfile "$work/$1.ext" -out "$work/$1-cert.pem" 2>/dev/null
}

# start_consumer TENANT COUNT: Python qpid-proton receives COUNT messages of TENANT into
# $work/consumed (one line each) once both links are attached.
start_consumer() {
  /usr/bin/python3 "$ci_dir/proton_consumer.py" 127.0.0.1:15672 "$1" "$2" >"$work/consumed" 2>"$work/consumer.err" &
  consumer_pid=$!
  for _ in $(seq 1 100); do
    grep -q '^ready' "$work/consumed" 2>/dev/null && return
    sleep 0.1
  done
  fail "consumer did not attach: $(cat "$work/consumer.err")"
}

# finish_consumer: waits until the consumer got all its messages.
finish_consumer() {
  wait "$consumer_pid" || fail "consumer failed: $(cat "$work/consumer.err"); got: $(cat "$work/consumed")"
  consumer_pid=
}

# received PATTERN WHAT: fails unless a consumed line matches PATTERN.
received() {
  grep -q "$1" "$work/consumed" || fail "$2 not received: $(cat "$work/consumed")"
}
