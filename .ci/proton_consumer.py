"""Receives N messages from Ferry's northbound with Apache Qpid Proton (an independent AMQP 1.0
client) and prints one line per message: endpoint, device_id, content type and payload."""
import sys

from proton.handlers import MessagingHandler
from proton.reactor import Container


class Consumer(MessagingHandler):
    def __init__(self, address, tenant, count):
        super().__init__()  # auto-accepts each message after on_message returns
        self.address, self.tenant, self.count, self.got = address, tenant, count, 0
        self.attached = 0

    def on_start(self, event):
        conn = event.container.connect(f"amqp://{self.address}", allowed_mechs="ANONYMOUS")
        for endpoint in ("telemetry", "event"):
            event.container.create_receiver(conn, f"{endpoint}/{self.tenant}", name=endpoint)
        event.container.schedule(60, self)

    def on_link_opened(self, event):
        self.attached += 1
        if self.attached == 2:
            print("ready", flush=True)

    def on_message(self, event):
        msg = event.message
        body = msg.body
        if isinstance(body, (bytes, memoryview)):
            body = bytes(body).decode("utf-8", "replace")
        props = msg.properties or {}
        print(
            f"{event.link.name} device_id={props.get('device_id')} "
            f"content-type={msg.content_type} payload={body}",
            flush=True,
        )
        self.got += 1
        if self.got >= self.count:
            event.connection.close()
            event.container.stop()

    def on_timer_task(self, event):
        sys.exit(f"only {self.got} of {self.count} messages arrived within 60 s")


Container(Consumer(sys.argv[1], sys.argv[2], int(sys.argv[3]))).run()
