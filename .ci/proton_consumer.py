"""Receives N messages from Ferry's northbound with Apache Qpid Proton (an independent AMQP 1.0
client) and prints one line per message: endpoint, device_id, content type and payload."""
import sys
import time

from proton.utils import BlockingConnection

address, tenant, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
conn = BlockingConnection(f"amqp://{address}", timeout=30, allowed_mechs="ANONYMOUS")
receivers = {
    "telemetry": conn.create_receiver(f"telemetry/{tenant}"),
    "event": conn.create_receiver(f"event/{tenant}"),
}
print("ready", flush=True)
got = 0
deadline = time.monotonic() + 60
while got < count:
    if time.monotonic() > deadline:
        sys.exit(f"only {got} of {count} messages arrived within 60 s")
    for endpoint, receiver in receivers.items():
        try:
            msg = receiver.receive(timeout=0.5)
        except Exception:  # proton's Timeout: poll the other link
            continue
        body = msg.body
        if isinstance(body, (bytes, memoryview)):
            body = bytes(body).decode("utf-8", "replace")
        props = msg.properties or {}
        print(
            f"{endpoint} device_id={props.get('device_id')} content-type={msg.content_type} "
            f"payload={body}",
            flush=True,
        )
        receiver.accept()
        got += 1
conn.close()
