"""Key rotation without downtime: the keyring reloads on SIGHUP (new data
keys are wrapped under the new primary, old data reads, a keyring that does
not fit the data is refused and the old one kept). GetKeyStatus shows the
master keys, the data keys under each and the blind-index key id."""
import os
import signal
import subprocess

from harness import E2ETestCase, uid
import test_at_rest as at_rest
from engram.v1 import admin_pb2 as apb  # noqa: E402
from engram.v1 import admin_pb2_grpc as apbg  # noqa: E402

RELOAD_TIMEOUT = 10


def key_status(client):
    return apbg.AdminServiceStub(client.channel).GetKeyStatus(apb.GetKeyStatusRequest(),
                                                              timeout=10.0)


def masters(st):
    """{master key id: (data keys under it, primary, in keyring)}."""
    return {m.master_key_id: (m.data_keys, m.primary, m.in_keyring) for m in st.master_keys}


class KeyringReloadTest(E2ETestCase):

    def setUp(self):
        self.srv = self.start_server()
        self.c = self.srv.client()

    def write(self, user, text):
        sid = self.c.create(user).session_id
        self.c.append(sid, text)
        return sid

    def reload(self, want):
        """SIGHUP, then waits for the log line `want` to appear once more."""
        before = self.srv.log_text().count(want)
        os.kill(self.srv.pid, signal.SIGHUP)
        self.wait_until(lambda: self.srv.log_text().count(want) > before, RELOAD_TIMEOUT,
                        "log line %r" % want, [self.srv])

    def test_added_primary_wraps_new_keys_and_old_data_reads(self):
        old_sid = self.write(uid("alice"), "under key one")
        st = key_status(self.c)
        self.assertEqual(masters(st), {1: (1, True, True)})
        self.assertEqual((st.blind_index_key_id, st.blind_index_target_key_id), (1, 0))
        keys, _ = at_rest.read_keyring(self.srv.keyring_path)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(self.srv.keyring_path, keys, 2)
        self.reload("keyring reloaded from %s: primary key id 2, blind-index key id 1"
                    % self.srv.keyring_path)
        self.assertEqual(masters(key_status(self.c)), {1: (1, False, True), 2: (0, True, True)})
        new_sid = self.write(uid("bob"), "under key two")
        self.c.append(old_sid, "appended after the reload")
        st = key_status(self.c)
        self.assertEqual(masters(st), {1: (1, False, True), 2: (1, True, True)})
        # Adding a key (and moving the primary) leaves the blind index.
        self.assertEqual((st.blind_index_key_id, st.blind_index_target_key_id), (1, 0))
        self.assertEqual([m.content for m in self.c.all_messages(old_sid)],
                         ["under key one", "appended after the reload"])
        self.assertEqual([m.content for m in self.c.all_messages(new_sid)], ["under key two"])
        # The reload recorded key 2 in the fingerprint: a start without it
        # is refused.
        self.srv.stop()
        at_rest.write_keyring(self.srv.keyring_path, {1: keys[1]}, 1)
        p = subprocess.run(self.srv.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(b"key 2, which data here may be sealed with", p.stdout)
        at_rest.write_keyring(self.srv.keyring_path, keys, 2)
        self.srv.start()
        self.c = self.srv.client()
        self.assertEqual([m.content for m in self.c.all_messages(new_sid)], ["under key two"])

    def test_a_keyring_that_does_not_fit_is_refused_and_the_old_one_kept(self):
        sid = self.write(uid("alice"), "first")
        keys, _ = at_rest.read_keyring(self.srv.keyring_path)
        refused = "keyring reload refused, keeping the keyring in use"
        # Key 1, which the data is sealed with, missing.
        at_rest.write_keyring(self.srv.keyring_path, {2: os.urandom(32)}, 2)
        self.reload(refused)
        self.assertIn("key 1", self.srv.log_text().split(refused)[-1].splitlines()[0])
        # Another key under id 1.
        at_rest.write_keyring(self.srv.keyring_path, {1: os.urandom(32)}, 1)
        self.reload(refused)
        self.assertIn("key 1 in the keyring differs",
                      self.srv.log_text().split(refused)[-1].splitlines()[0])
        # Not a keyring at all.
        with open(self.srv.keyring_path, "w") as f:
            f.write("this is not a keyring\n")
        self.reload(refused)
        # Still serving under key 1 alone: old data reads, a new user's
        # data key is wrapped under it.
        self.c.append(sid, "second")
        self.write(uid("bob"), "a new user")
        self.assertEqual([m.content for m in self.c.all_messages(sid)], ["first", "second"])
        self.assertEqual(masters(key_status(self.c)), {1: (2, True, True)})
        self.assertNotIn("keyring reloaded", self.srv.log_text())
        # Put right, it reloads.
        at_rest.write_keyring(self.srv.keyring_path, keys, 1)
        self.reload("keyring reloaded from %s: primary key id 1" % self.srv.keyring_path)
