#!/usr/bin/env bash
# X.509 happy path with independent tools: openssl makes a CA and device certificates, curl
# registers the CA with the Management API and sends with `--cert` over TLS, Python qpid-proton
# consumes. Covers a registered certificate, auto-provisioning on the first request (with the
# provisioning notification) and a certificate from an untrusted CA (401).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${CARGO_TARGET_DIR:-target}/debug/ferry
[ -x "$bin" ] || cargo build --bin ferry
work=$(mktemp -d)
cleanup() {
  [ -n "${ferry_pid:-}" ] && kill "$ferry_pid" 2>/dev/null || true
  [ -n "${consumer_pid:-}" ] && kill "$consumer_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "x509 interop FAILED: $*"; echo "--- ferry log"; tail -n 40 "$work/ferry.log"; exit 1; }

"$bin" run --data-dir "$work/data" >"$work/ferry.out" 2>"$work/ferry.log" &
ferry_pid=$!
mgmt=http://127.0.0.1:28080/v1
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$mgmt/tenants/none" || true)" = "404" ] && break
  sleep 0.2
done

cd "$work"
ca() { # ca NAME SUBJECT
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -keyout "$1-key.pem" -out "$1-cert.pem" -subj "$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
device() { # device NAME CA SUBJECT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$1-key.pem" -out "$1.csr" -subj "$3" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2-cert.pem" -CAkey "$2-key.pem" -CAcreateserial -days 7 \
    -extfile "$1.ext" -out "$1-cert.pem" 2>/dev/null
}
ca fleet "/O=CI Fleet/CN=CI Device CA"
ca rogue "/O=Rogue/CN=Rogue CA"
device known fleet "/O=CI Fleet/CN=known-1"
device fresh fleet "/O=CI Fleet/CN=fresh-1"
device impostor rogue "/O=CI Fleet/CN=known-1"
der=$(openssl x509 -in fleet-cert.pem -outform DER | base64 -w0)

code=$(curl -s -o body -w '%{http_code}' -X POST -H 'content-type: application/json' "$mgmt/tenants/x509-ci" \
  -d "{\"trusted-ca\":[{\"cert\":\"$der\",\"auto-provisioning-enabled\":true,\"auto-provisioning-device-id-template\":\"{{subject-cn}}\"}]}")
[ "$code" = 201 ] || fail "create tenant: $code $(cat body)"
curl -sf -X POST "$mgmt/devices/x509-ci/known-1" >/dev/null || fail "create device"
curl -sf -X PUT -H 'content-type: application/json' "$mgmt/credentials/x509-ci/known-1" \
  -d '[{"type":"x509-cert","auth-id":"CN=known-1,O=CI Fleet","secrets":[{}]}]' || fail "set x509 credential"

# Expect: telemetry of known-1, the provisioning notification of fresh-1 and fresh-1's event.
/usr/bin/python3 "$OLDPWD/.ci/proton_consumer.py" 127.0.0.1:15672 x509-ci 3 >consumed 2>consumer.err &
consumer_pid=$!
for _ in $(seq 1 100); do
  grep -q '^ready' consumed 2>/dev/null && break
  sleep 0.1
done
grep -q '^ready' consumed || fail "consumer did not attach: $(cat consumer.err)"

send() { # send NAME ENDPOINT PAYLOAD -> status
  curl -s -o body -w '%{http_code}' --cacert data/tls/server-cert.pem --cert "$1-cert.pem" --key "$1-key.pem" \
    -H 'content-type: text/plain' -d "$3" "https://localhost:8443/$2"
}
[ "$(send known telemetry 'known by certificate')" = 202 ] || fail "registered certificate refused: $(cat body)"
[ "$(send impostor telemetry 'from the rogue CA')" = 401 ] || fail "untrusted CA not refused with 401"
[ "$(send fresh event 'first words')" = 202 ] || fail "auto-provisioning refused: $(cat body)"

wait "$consumer_pid" || fail "consumer failed: $(cat consumer.err)"
consumer_pid=
grep -q 'telemetry device_id=known-1 content-type=text/plain payload=known by certificate' consumed \
  || fail "telemetry of the registered certificate not received: $(cat consumed)"
grep -q 'event device_id=fresh-1 content-type=application/vnd.eclipse-hono-device-provisioning-notification' consumed \
  || fail "provisioning notification not received: $(cat consumed)"
grep -q 'event device_id=fresh-1 content-type=text/plain payload=first words' consumed \
  || fail "first event of the auto-provisioned device not received: $(cat consumed)"
curl -s "$mgmt/devices/x509-ci/fresh-1" | grep -q '"auto-provisioned":true' || fail "fresh-1 not marked auto-provisioned"
echo "x509 interop: openssl certificates + curl --cert -> Ferry -> qpid-proton: registered, auto-provisioned (with notification), untrusted refused"
echo "1 passed, 0 failed"
