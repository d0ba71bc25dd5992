"""Reflection needs no token, so its places are shared with anyone: one
address holds at most EG_REFLECTION_PEER_STREAMS (2) of the
EG_REFLECTION_STREAMS_MAX (8) anonymous places, and callers with a valid
token (--tokens) have EG_REFLECTION_TOKEN_STREAMS_MAX places of their own.
Several peers come from relays bound to other loopback addresses."""
import grpc

from harness import RPC_TIMEOUT, E2ETestCase, uid
from relay import Relay
from test_reflection import Stream

STREAMS_MAX = 8   # EG_REFLECTION_STREAMS_MAX
PEER_MAX = 2      # EG_REFLECTION_PEER_STREAMS


class ReflectionPeersTest(E2ETestCase):

    def setUp(self):
        self.token = "reflect-peer-" + uid()
        self.srv = self.start_server(tokens=[("tenant-a", "agent", self.token)])

    def channel(self, addr):
        ch = grpc.insecure_channel(addr)
        self.addCleanup(ch.close)
        return ch

    def relay(self, source_ip):
        r = Relay(self.srv.addr, source_ip)
        self.addCleanup(r.close)
        return r

    def hold(self, ch, metadata=None):
        """A stream that took its place (it was answered) and stays open."""
        s = Stream(ch, metadata=metadata, timeout=60)
        self.addCleanup(s.close)
        self.assertTrue(s.ask(list_services="").list_services_response.service)
        return s

    def refused(self, ch, metadata=None):
        s = Stream(ch, metadata=metadata, timeout=RPC_TIMEOUT)
        self.addCleanup(s.close)
        code, details = s.status()
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
        return details

    def test_one_address_cannot_take_every_place(self):
        ch = self.channel(self.srv.addr)
        held = [self.hold(ch) for _ in range(PEER_MAX)]
        # The 3rd of 8 from one address is refused, naming the bound.
        for _ in range(STREAMS_MAX - PEER_MAX):
            details = self.refused(ch)
            self.assertIn("from one address (at most %d each without a token)" % PEER_MAX,
                          details)
        # Another address still gets a place.
        self.hold(self.channel(self.relay("127.0.0.2").addr))
        # A place given back is the address's again.
        held[0].close()
        self.assertEqual(held[0].status(), (grpc.StatusCode.OK, ""))
        self.hold(ch)

    def test_token_holders_have_places_of_their_own(self):
        # Every anonymous place taken, from STREAMS_MAX / PEER_MAX addresses.
        for i in range(STREAMS_MAX // PEER_MAX):
            ch = self.channel(self.relay("127.0.0.%d" % (i + 2)).addr)
            for _ in range(PEER_MAX):
                self.hold(ch)
        ch = self.channel(self.relay("127.0.0.%d" % (STREAMS_MAX // PEER_MAX + 2)).addr)
        self.assertIn("at most %d)" % STREAMS_MAX, self.refused(ch))
        # A token that is no one's is anonymous: refused too.
        self.assertIn("at most %d)" % STREAMS_MAX,
                      self.refused(ch, (("authorization", "Bearer not-a-token"),)))
        # A valid token is answered, from any address.
        authz = (("authorization", "Bearer " + self.token),)
        self.hold(ch, authz)
        self.hold(self.channel(self.srv.addr), authz)


if __name__ == "__main__":
    import unittest
    unittest.main()
