"""Key rotation without downtime: the keyring reloads on SIGHUP (new writes
seal under the new primary, old data reads, a keyring that does not fit the
data is refused and the old one kept). Reads field tokens' key ids from
data.mdb with mdb_dump (lmdb-utils)."""
import os
import shutil
import signal
import subprocess

from harness import E2ETestCase, uid
import test_at_rest as at_rest

RELOAD_TIMEOUT = 10


def token_key_ids(data_dir, db, sid):
    """{key id: how many} of the format-1 field tokens (0x01 | key id u32 BE)
    in the values of `db` whose key holds session id sid, found by each key
    id the keyring may hold (1..3)."""
    _, recs = at_rest.mdb_dump(data_dir, db)
    out = {}
    for k, v in recs:
        if sid.encode() in k:
            for kid in (1, 2, 3):
                n = v.count(b"\x01" + kid.to_bytes(4, "big"))
                if n:
                    out[kid] = out.get(kid, 0) + n
    return out


class KeyringReloadTest(E2ETestCase):

    def setUp(self):
        if not shutil.which("mdb_dump"):
            self.fail("mdb_dump (lmdb-utils) not installed")
        self.srv = self.start_server()
        self.c = self.srv.client()

    def reload(self, want):
        """SIGHUP, then waits for the log line `want` to appear once more."""
        before = self.srv.log_text().count(want)
        os.kill(self.srv.pid, signal.SIGHUP)
        self.wait_until(lambda: self.srv.log_text().count(want) > before, RELOAD_TIMEOUT,
                        "log line %r" % want, [self.srv])

    def test_added_primary_seals_new_writes_and_old_data_reads(self):
        old_sid = self.c.create(uid("u")).session_id
        self.c.append(old_sid, "sealed under key one")
        self.assertEqual(token_key_ids(self.srv.data_dir, "messages", old_sid), {1: 1})
        keys, _ = at_rest.read_keyring(self.srv.keyring_path)
        keys[2] = os.urandom(32)
        at_rest.write_keyring(self.srv.keyring_path, keys, 2)
        self.reload("keyring reloaded from %s: primary key id 2" % self.srv.keyring_path)
        new_sid = self.c.create(uid("u")).session_id
        self.c.append(new_sid, "sealed under key two")
        self.c.append(old_sid, "appended after the reload")
        self.assertEqual(token_key_ids(self.srv.data_dir, "messages", new_sid), {2: 1})
        self.assertEqual(token_key_ids(self.srv.data_dir, "messages", old_sid), {1: 1, 2: 1})
        self.assertEqual([m.content for m in self.c.all_messages(old_sid)],
                         ["sealed under key one", "appended after the reload"])
        self.assertEqual([m.content for m in self.c.all_messages(new_sid)],
                         ["sealed under key two"])
        # The fingerprint now names key 2: a restart without it is refused.
        self.srv.stop()
        at_rest.write_keyring(self.srv.keyring_path, {1: keys[1]}, 1)
        p = subprocess.run(self.srv.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(b"key 2, which data here may be sealed with", p.stdout)
        at_rest.write_keyring(self.srv.keyring_path, keys, 2)
        self.srv.start()
        self.c = self.srv.client()
        self.assertEqual([m.content for m in self.c.all_messages(new_sid)],
                         ["sealed under key two"])

    def test_a_keyring_that_does_not_fit_is_refused_and_the_old_one_kept(self):
        sid = self.c.create(uid("u")).session_id
        self.c.append(sid, "first")
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
        # Still serving, under key 1: new writes seal with it, old data reads.
        self.c.append(sid, "second")
        self.assertEqual([m.content for m in self.c.all_messages(sid)], ["first", "second"])
        self.assertEqual(token_key_ids(self.srv.data_dir, "messages", sid), {1: 2})
        self.assertNotIn("keyring reloaded", self.srv.log_text())
        # Put right, it reloads.
        at_rest.write_keyring(self.srv.keyring_path, keys, 1)
        self.reload("keyring reloaded from %s: primary key id 1" % self.srv.keyring_path)
