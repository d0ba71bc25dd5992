"""DeduplicateMemories stops at the call's deadline: a long pass (many
continuations of --dedup-batch work) does not keep feeding the writer after
its client gave up; what it marked stays, and a new call finishes it."""
import re
import urllib.request

import grpc

from harness import ServerTestCase, uid
from test_hardening_keys import metrics_port, wait_for
from test_memories import Mem, mp

DD = re.compile(r'engram_rpc_total\{method="/engram\.v1\.MemoryService/DeduplicateMemories",'
                r'code="(\w+)"\} (\d+)')
# Fillers sharing two words: every one is compared with all older ones, so the
# pass is quadratic: 1,600 make it last well past the 0.3 s deadline (800 once
# finished within it on a 2-vCPU machine after the writer got faster).
N = 1600


class DedupDeadlineTest(ServerTestCase):
    server_args = ("--dedup-batch", "100", "--metrics-listen", "127.0.0.1:0")

    def dd_codes(self, port):
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
            return {code: int(n) for code, n in DD.findall(r.read().decode())}

    def test_pass_stops_at_the_deadline(self):
        port = metrics_port(self.server)
        mem = Mem(self.client)
        user = uid("u")
        futs = [mem.m.CreateMemory.future(mp.CreateMemoryRequest(
            memory=mp.Memory(user_id=user, text="filler note %s" % uid("w").replace("-", ""),
                             type=mp.MEMORY_TYPE_PREFERENCE),
            dedup_policy=mp.DEDUP_POLICY_OFF), timeout=30, metadata=self.client.md)
            for _ in range(N)]
        for f in futs:
            f.result()
        with self.assertRaises(grpc.RpcError) as cm:
            mem.m.DeduplicateMemories(mp.DeduplicateMemoriesRequest(user_id=user), timeout=0.3,
                                      metadata=self.client.md)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        # The event: the server answers the call (the client's deadline does
        # not count it). It must be the deadline, not the pass run to its end.
        codes = wait_for(lambda: self.dd_codes(port), 60, "the server's answer to the pass")
        self.assertEqual(codes, {"DEADLINE_EXCEEDED": 1})
        # Nothing was lost: a call with time enough finishes the pass.
        r = mem.m.DeduplicateMemories(mp.DeduplicateMemoriesRequest(user_id=user), timeout=120,
                                      metadata=self.client.md)
        self.assertEqual((r.examined, r.duplicates), (N, 0))
