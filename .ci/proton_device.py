"""Sends messages to Ferry's AMQP adapter as a device with Apache Qpid Proton (an independent AMQP
1.0 client): SASL PLAIN (or EXTERNAL), one anonymous-relay sender link (null target), each message
addressed by its `to`, unsettled. Prints one line per outcome and exits non-zero unless all were
accepted.

usage: proton_device.py [--tls CA_PEM [--cert CERT_PEM KEY_PEM]] HOST:PORT USER PASSWORD TO=PAYLOAD...
With --tls, connects with amqps:// (TLS from the first byte) trusting CA_PEM and checking the
server's host name. With --cert, presents that client certificate and authenticates with SASL
EXTERNAL only (USER and PASSWORD are ignored; pass "-").
"""
import sys

from proton import Message, SSLDomain
from proton.handlers import MessagingHandler
from proton.reactor import Container


class Device(MessagingHandler):
    def __init__(self, address, user, password, messages, ca=None, cert=None):
        super().__init__()
        self.address, self.user, self.password, self.ca = address, user, password, ca
        self.cert = cert
        self.messages, self.outcomes = messages, []

    def on_start(self, event):
        ssl = None
        if self.ca:
            ssl = SSLDomain(SSLDomain.MODE_CLIENT)
            ssl.set_trusted_ca_db(self.ca)
            ssl.set_peer_authentication(SSLDomain.VERIFY_PEER_NAME)
            if self.cert:
                ssl.set_credentials(self.cert[0], self.cert[1], None)
        scheme = "amqps" if self.ca else "amqp"
        if self.cert:
            credentials = {"allowed_mechs": "EXTERNAL"}
        else:
            credentials = {
                "user": self.user,
                "password": self.password,
                "allowed_mechs": "PLAIN",
                "allow_insecure_mechs": True,
            }
        conn = event.container.connect(
            f"{scheme}://{self.address}", ssl_domain=ssl, **credentials
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


args, ca, cert = sys.argv[1:], None, None
if args[:1] == ["--tls"]:
    ca, args = args[1], args[2:]
if ca and args[:1] == ["--cert"]:
    cert, args = (args[1], args[2]), args[3:]
pairs = [arg.split("=", 1) for arg in args[3:]]
device = Device(args[0], args[1], args[2], pairs, ca, cert)
device.expected = len(pairs)
Container(device).run()
if device.outcomes != ["accepted"] * device.expected:
    sys.exit(f"not all accepted: {device.outcomes}")
