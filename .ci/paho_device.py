"""An MQTT device written with Eclipse Paho (paho-mqtt 2.x, an independent MQTT client).

Publishes N QoS 1 events (each awaited until its PUBACK), then subscribes to its error topic
and publishes an event with QoS 0, which Ferry must refuse with 400 on the error topic (events
need QoS 1). Exits non-zero on any deviation."""
import sys
import threading

import paho.mqtt.client as mqtt

host, port, username, password, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])

errors = []
got_error = threading.Event()
subscribed = threading.Event()


def on_message(client, userdata, message):
    errors.append((message.topic, message.payload.decode("utf-8", "replace")))
    got_error.set()


def on_subscribe(client, userdata, mid, reason_codes, properties):
    if all(not rc.is_failure for rc in reason_codes):
        subscribed.set()


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ci-paho", protocol=mqtt.MQTTv311)
client.username_pw_set(username, password)
client.on_message = on_message
client.on_subscribe = on_subscribe
client.connect(host, port, keepalive=30)
client.loop_start()

for i in range(count):
    info = client.publish("event", f"paho event {i}".encode(), qos=1)
    info.wait_for_publish(timeout=20)
    if not info.is_published():
        sys.exit(f"event {i} was not acknowledged")

client.subscribe("e///#", qos=0)
if not subscribed.wait(10):
    sys.exit("error topic subscription refused")
client.publish("event", b"at most once", qos=0)
if not got_error.wait(10):
    sys.exit("no error message for an event published with QoS 0")
topic, payload = errors[0]
if not topic.endswith("/400") or '"code":400' not in payload.replace(" ", ""):
    sys.exit(f"unexpected error message {topic}: {payload}")
client.disconnect()
client.loop_stop()
print(f"paho: {count} events acknowledged; error topic got {topic}")
