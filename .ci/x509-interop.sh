#!/usr/bin/env bash
# X.509 happy path with independent tools: openssl makes a CA and device certificates, curl
# registers the CA with the Management API and sends with `--cert` over TLS, Python qpid-proton
# consumes. Covers a registered certificate, auto-provisioning on the first request (with the
# provisioning notification) and a certificate from an untrusted CA (401).
set -euo pipefail
cd "$(dirname "$0")/.."

name="x509 interop"
source .ci/lib.sh
start_ferry
cd "$work"

openssl_ca fleet "/O=CI Fleet/CN=CI Device CA"
openssl_ca rogue "/O=Rogue/CN=Rogue CA"
openssl_device known fleet "/O=CI Fleet/CN=known-1"
openssl_device fresh fleet "/O=CI Fleet/CN=fresh-1"
openssl_device impostor rogue "/O=CI Fleet/CN=known-1"
der=$(openssl x509 -in fleet-cert.pem -outform DER | base64 -w0)

code=$(curl -s -o body -w '%{http_code}' -X POST -H 'content-type: application/json' "$mgmt/tenants/x509-ci" \
  -d "{\"trusted-ca\":[{\"cert\":\"$der\",\"auto-provisioning-enabled\":true,\"auto-provisioning-device-id-template\":\"{{subject-cn}}\"}]}")
[ "$code" = 201 ] || fail "create tenant: $code $(cat body)"
curl -sf -X POST "$mgmt/devices/x509-ci/known-1" >/dev/null || fail "create device"
curl -sf -X PUT -H 'content-type: application/json' "$mgmt/credentials/x509-ci/known-1" \
  -d '[{"type":"x509-cert","auth-id":"CN=known-1,O=CI Fleet","secrets":[{}]}]' || fail "set x509 credential"

# Expect: telemetry of known-1, the provisioning notification of fresh-1 and fresh-1's event.
start_consumer x509-ci 3

send() { # send NAME ENDPOINT PAYLOAD -> status
  curl -s -o body -w '%{http_code}' --cacert data/tls/server-cert.pem --cert "$1-cert.pem" --key "$1-key.pem" \
    -H 'content-type: text/plain' -d "$3" "https://localhost:8443/$2"
}
[ "$(send known telemetry 'known by certificate')" = 202 ] || fail "registered certificate refused: $(cat body)"
[ "$(send impostor telemetry 'from the rogue CA')" = 401 ] || fail "untrusted CA not refused with 401"
[ "$(send fresh event 'first words')" = 202 ] || fail "auto-provisioning refused: $(cat body)"

finish_consumer
received 'telemetry device_id=known-1 content-type=text/plain payload=known by certificate' \
  "telemetry of the registered certificate"
received 'event device_id=fresh-1 content-type=application/vnd.eclipse-hono-device-provisioning-notification' \
  "provisioning notification"
received 'event device_id=fresh-1 content-type=text/plain payload=first words' \
  "first event of the auto-provisioned device"
curl -s "$mgmt/devices/x509-ci/fresh-1" | grep -q '"auto-provisioned":true' || fail "fresh-1 not marked auto-provisioned"
echo "x509 interop: openssl certificates + curl --cert -> Ferry -> qpid-proton: registered, auto-provisioned (with notification), untrusted refused"
echo "1 passed, 0 failed"
