"""Sends messages to Ferry's AMQP adapter as a device with Apache Qpid Proton (an independent AMQP
1.0 client): SASL PLAIN, one anonymous-relay sender link (null target), each message addressed by
its `to`, unsettled. Prints one line per outcome and exits non-zero unless all were accepted.

usage: proton_device.py HOST:PORT USER PASSWORD TO=PAYLOAD...
"""
import sys

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container


class Device(MessagingHandler):
    def __init__(self, address, user, password, messages):
        super().__init__()
        self.address, self.user, self.password = address, user, password
        self.messages, self.outcomes = messages, []

    def on_start(self, event):
        conn = event.container.connect(
            f"amqp://{self.address}",
            user=self.user,
            password=self.password,
            allowed_mechs="PLAIN",
            allow_insecure_mechs=True,
        )
        event.container.create_sender(conn, target=None)
        event.container.schedule(30, self)

    def on_sendable(self, event):
        while self.messages and event.sender.credit:
            to, payload = self.messages.pop(0)
            event.sender.send(Message(address=to, body=payload.encode(), content_type="text/plain"))

    def settled(self, event, outcome):
        self.outcomes.append(outcome)
        print(f"{outcome}", flush=True)
        if not self.messages and len(self.outcomes) == self.expected:
            event.connection.close()

    def on_accepted(self, event):
        self.settled(event, "accepted")

    def on_rejected(self, event):
        self.settled(event, f"rejected {event.delivery.remote.condition}")

    def on_released(self, event):
        self.settled(event, "released")

    def on_connection_closed(self, event):
        event.container.stop()

    def on_transport_error(self, event):
        sys.exit(f"transport error: {event.transport.condition}")

    def on_timer_task(self, event):
        sys.exit(f"only {len(self.outcomes)} outcomes within 30 s")


pairs = [arg.split("=", 1) for arg in sys.argv[4:]]
device = Device(sys.argv[1], sys.argv[2], sys.argv[3], pairs)
device.expected = len(pairs)
Container(device).run()
if device.outcomes != ["accepted"] * device.expected:
    sys.exit(f"not all accepted: {device.outcomes}")
