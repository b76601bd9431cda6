#!/usr/bin/env bash
# MQTT with independent clients: Debian's mosquitto_pub with an openssl-made client certificate
# on 8883, mosquitto_sub refused a non-error subscription, and Eclipse Paho (PyPI paho-mqtt 2.x)
# publishing QoS 1 events and receiving a refusal on its error topic; Python qpid-proton checks
# what arrived northbound.
set -euo pipefail
cd "$(dirname "$0")/.."
name="mqtt interop"
source .ci/lib.sh
start_ferry

curl -sf -X POST "$mgmt/tenants/mqtt-ci" >/dev/null || fail "create tenant"
curl -sf -X POST "$mgmt/devices/mqtt-ci/dev1" >/dev/null || fail "create dev1"
curl -sf -X PUT -H 'content-type: application/json' "$mgmt/credentials/mqtt-ci/dev1" \
  -d '[{"type":"hashed-password","auth-id":"dev1","secrets":[{"pwd-plain":"s3cret"}]}]' || fail "dev1 password"
openssl_ca fleet "/O=MQTT CI/CN=MQTT CI CA"
openssl_device dev2 fleet "/O=MQTT CI/CN=dev2"
der=$(openssl x509 -in "$work/fleet-cert.pem" -outform DER | base64 -w0)
curl -sf -X PUT -H 'content-type: application/json' "$mgmt/tenants/mqtt-ci" \
  -d "{\"trusted-ca\":[{\"cert\":\"$der\"}]}" || fail "trust the CA"
curl -sf -X POST "$mgmt/devices/mqtt-ci/dev2" >/dev/null || fail "create dev2"
curl -sf -X PUT -H 'content-type: application/json' "$mgmt/credentials/mqtt-ci/dev2" \
  -d '[{"type":"x509-cert","auth-id":"CN=dev2,O=MQTT CI","secrets":[{}]}]' || fail "dev2 x509 credential"

events=5
start_consumer mqtt-ci $((events + 2))

# QoS 1 returns only after the PUBACK, which Ferry sends once the northbound took the message.
timeout 20 mosquitto_pub -h localhost -p 8883 --cafile "$work/data/tls/server-cert.pem" \
  --cert "$work/dev2-cert.pem" --key "$work/dev2-key.pem" -i ci-dev2 -q 1 -t event -m 'x509 from mosquitto' \
  2>"$work/pub.err" || fail "mosquitto_pub with a client certificate: $(cat "$work/pub.err")"
timeout 20 mosquitto_pub -h localhost -p 8883 --cafile "$work/data/tls/server-cert.pem" \
  --cert "$work/dev2-cert.pem" --key "$work/dev2-key.pem" -i ci-dev2 -V mqttv5 -q 1 -t e \
  -D publish content-type application/json -m '{"x509":5}' \
  2>"$work/pub.err" || fail "mosquitto_pub (MQTT 5) with a client certificate: $(cat "$work/pub.err")"

# Ferry has no commands yet: any subscription but the error topic is refused (SUBACK 0x80).
timeout 10 mosquitto_sub -h 127.0.0.1 -p 1883 -u dev1@mqtt-ci -P s3cret -t 'command///req/#' -C 1 \
  >"$work/sub.out" 2>&1 || true
grep -qi 'denied' "$work/sub.out" || fail "mosquitto_sub refusal unclear: $(cat "$work/sub.out")"

python3 .ci/paho_device.py 127.0.0.1 1883 dev1@mqtt-ci s3cret "$events" >"$work/paho.out" 2>&1 \
  || fail "paho device: $(cat "$work/paho.out")"

finish_consumer
received 'event device_id=dev2 content-type=application/octet-stream payload=x509 from mosquitto' \
  "mosquitto_pub's event with a client certificate"
received 'event device_id=dev2 content-type=application/json payload={"x509":5}' "mosquitto_pub's MQTT 5 event"
for i in $(seq 0 $((events - 1))); do
  received "event device_id=dev1 content-type=application/octet-stream payload=paho event $i" "paho event $i"
done
echo "mqtt interop: mosquitto_pub (client certificate, 3.1.1 and 5), mosquitto_sub (refused), paho-mqtt (QoS 1 events, error topic) -> Ferry -> qpid-proton"
echo "1 passed, 0 failed"
