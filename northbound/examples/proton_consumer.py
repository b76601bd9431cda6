# Interop check with Qpid Proton (Debian python3-qpid-proton; run with /usr/bin/python3):
#   /usr/bin/python3 proton_consumer.py amqp://127.0.0.1:15672 COUNT USER|- PASSWORD [ADDRESS...]
# Receives COUNT messages from telemetry/demo and event/demo (or the given addresses), accepts
# each, and prints properties, link errors (e.g. amqp:not-found) and authentication failures.
import sys
from proton.handlers import MessagingHandler
from proton.reactor import Container
from proton import SSLDomain

class Recv(MessagingHandler):
    def __init__(self, url, addresses, count, user=None, password=None):
        super().__init__(auto_accept=False)
        self.url, self.addresses, self.count = url, addresses, count
        self.user, self.password = user, password
        self.received = 0
    def on_start(self, event):
        kw = {}
        if self.user:
            kw = dict(user=self.user, password=self.password, allowed_mechs="PLAIN")
        else:
            kw = dict(allowed_mechs="ANONYMOUS")
        conn = event.container.connect(self.url, **kw)
        for a in self.addresses:
            event.container.create_receiver(conn, a)
    def on_message(self, event):
        m = event.message
        print("MSG", event.link.source.address, m.address, m.content_type, m.creation_time, m.durable, m.id, dict(m.properties or {}), m.body, flush=True)
        self.accept(event.delivery)
        self.received += 1
        if self.received >= self.count:
            event.connection.close()
    def on_link_error(self, event):
        print("LINK ERROR", event.link.source.address if event.link.source else None, event.link.remote_condition, flush=True)
    def on_link_closed(self, event):
        print("LINK CLOSED", event.link.remote_condition, flush=True)
    def on_transport_error(self, event):
        print("TRANSPORT ERROR", event.transport.condition, flush=True)
    def on_connection_error(self, event):
        print("CONN ERROR", event.connection.remote_condition, flush=True)

args = sys.argv[1:]
url, count = args[0], int(args[1])
user = args[2] if len(args) > 2 and args[2] != "-" else None
pw = args[3] if len(args) > 3 else None
addrs = args[4:] if len(args) > 4 else ["telemetry/demo", "event/demo"]
Container(Recv(url, addrs, count, user, pw)).run()
