"""Encryption at rest: no plaintext on disk, tampering is DATA_LOSS, keyring
rotation. Edits LMDB with mdb_dump/mdb_load (lmdb-utils) while the server is
stopped."""
import base64
import os
import pathlib
import re
import shutil
import stat
import subprocess

import grpc

from harness import E2ETestCase, M, Server, uid

DATA_LOSS = grpc.StatusCode.DATA_LOSS
KEY_RE = r"^key\s+(\d+)\s+(\S+)\s*$"


def files_under(d):
    for root, _, names in os.walk(d):
        for n in names:
            yield os.path.join(root, n)


def read_keyring(path):
    """Returns ({key_id: raw 32 bytes}, primary id or None)."""
    keys, primary = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = re.match(KEY_RE, line)
            if m:
                keys[int(m.group(1))] = base64.b64decode(m.group(2), validate=True)
                continue
            m = re.match(r"^primary\s+(\d+)\s*$", line)
            if m:
                primary = int(m.group(1))
    return keys, primary


def write_keyring(path, keys, primary):
    with open(path, "w") as f:
        f.write("primary %d\n" % primary)
        for kid, raw in sorted(keys.items()):
            f.write("key %d %s\n" % (kid, base64.b64encode(raw).decode()))
    os.chmod(path, 0o600)


def mdb_dump(data_dir, db):
    """Returns (header lines, [(key bytes, value bytes)]) of one named DB."""
    p = subprocess.run(["mdb_dump", "-s", db, data_dir], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise AssertionError("mdb_dump -s %s: %s" % (db, p.stderr.decode(errors="replace")))
    lines = p.stdout.decode().splitlines()
    end = lines.index("HEADER=END")
    header = lines[:end + 1]
    if any(h.strip() == "duplicates=1" for h in header):
        raise AssertionError("DB %s is DUPSORT; this test overwrites values" % db)
    recs, i = [], end + 1
    while lines[i] != "DATA=END":
        recs.append((bytes.fromhex(lines[i].strip()), bytes.fromhex(lines[i + 1].strip())))
        i += 2
    return header, recs


def mdb_put(data_dir, db, header, recs):
    """Overwrites the given records of one named DB."""
    text = "\n".join(header) + "\n"
    text += "".join(" %s\n %s\n" % (k.hex(), v.hex()) for k, v in recs) + "DATA=END\n"
    p = subprocess.run(["mdb_load", "-s", db, data_dir], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    if p.returncode != 0:
        raise AssertionError("mdb_load -s %s: %s" % (db, p.stderr.decode(errors="replace")))


def flip_middle(value):
    b = bytearray(value)
    b[len(b) // 2] ^= 0x01
    return bytes(b)


class AtRestTest(E2ETestCase):

    def setUp(self):
        if not shutil.which("mdb_dump") or not shutil.which("mdb_load"):
            self.fail("mdb_dump/mdb_load (lmdb-utils) not installed")
        self.srv = Server()
        self.addCleanup(self.srv.close)
        self.srv.start()
        self.c = self.srv.client()

    def restart(self):
        self.srv.start()
        self.c = self.srv.client()

    def records_of(self, db, sid):
        """The (key, value) records of `db` whose key contains sid."""
        header, recs = mdb_dump(self.srv.data_dir, db)
        mine = [(k, v) for k, v in recs if sid.encode() in k]
        if not mine:
            self.skipTest("cannot find %s records by session id in their keys" % db)
        return header, mine

    # -- plaintext -----------------------------------------------------------------

    def test_no_plaintext_on_disk_or_in_log(self):
        canaries = {
            "content": "zebra-plaintext-canary-7391",
            "msg_meta_key": "okapi-metakey-canary-5521",
            "msg_meta_value": "quokka-metavalue-canary-8830",
            "sess_meta_key": "narwhal-sesskey-canary-1177",
            "sess_meta_value": "axolotl-sessvalue-canary-4402",
            "summary": "pangolin-summary-canary-6068",
        }
        user = uid("visible-user")
        sid = self.c.create(user, metadata={canaries["sess_meta_key"]:
                                            canaries["sess_meta_value"]}).session_id
        self.c.append(sid, M("said: " + canaries["content"],
                             metadata={canaries["msg_meta_key"]: canaries["msg_meta_value"]}))
        self.c.append(sid, M(canaries["content"] * 40))
        self.c.update_summary(sid, "summary: " + canaries["summary"], 1)
        self.srv.stop()
        data = os.path.join(self.srv.data_dir, "data.mdb")
        self.assertTrue(os.path.isfile(data))
        blobs = {p: pathlib.Path(p).read_bytes() for p in files_under(self.srv.data_dir)}
        # control: the scan sees what is stored in the clear (ids are not secret)
        self.assertIn(user.encode(), blobs[data], "user_id not found: scan cannot be trusted")
        for name, text in canaries.items():
            needles = [text.encode(), text.encode().hex().encode(),
                       text.encode().hex().upper().encode()]
            for path, blob in blobs.items():
                for n in needles:
                    self.assertNotIn(n, blob, "%s (%r) found in %s" % (name, n[:40], path))
            self.assertNotIn(text, self.srv.log_text(), "%s written to the server log" % name)

    def test_keyring_created_0600_and_kept(self):
        path = os.path.join(self.srv.data_dir, "keyring")
        self.assertTrue(os.path.isfile(path), "no keyring at DATA_DIR/keyring")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        keys, _ = read_keyring(path)
        self.assertEqual(len(keys), 1, "want one key")
        self.assertEqual([len(k) for k in keys.values()], [32])
        before = pathlib.Path(path).read_bytes()
        sid = self.c.create(uid("u"), metadata={"k": "v"}).session_id
        self.c.append(sid, "hello")
        self.srv.stop()
        self.restart()
        self.assertEqual(pathlib.Path(path).read_bytes(), before, "keyring rewritten on restart")
        self.assertEqual([m.content for m in self.c.all_messages(sid)], ["hello"])
        self.assertEqual(dict(self.c.get(sid).metadata), {"k": "v"})

    # -- tampering -----------------------------------------------------------------

    def test_flipped_message_ciphertext_is_data_loss(self):
        user = uid("u")
        victim = self.c.create(user, session_id=uid("victim")).session_id
        other = self.c.create(user, session_id=uid("other")).session_id
        secret = "tamper-target-" + "q" * 3000
        self.c.append(victim, M(secret))
        self.c.append(other, "untouched-1", "untouched-2")
        self.srv.stop()
        header, mine = self.records_of("messages", victim)
        self.assertEqual(len(mine), 1)
        k, v = mine[0]
        self.assertGreater(len(v), 3000)
        mdb_put(self.srv.data_dir, "messages", header, [(k, flip_middle(v))])
        self.restart()
        self.assertStatus(DATA_LOSS, self.c.list_messages, victim)
        self.assertStatus(DATA_LOSS, self.c.context, victim)
        self.assertStatus(DATA_LOSS, self.c.list_messages, victim, newest_first=True)
        self.assertEqual(self.c.get(victim).message_count, 1)
        self.assertEqual([m.content for m in self.c.all_messages(other)],
                         ["untouched-1", "untouched-2"])
        self.assertEqual(len(self.c.context(other).messages), 2)

    def test_ciphertext_moved_to_another_record_does_not_open(self):
        user = uid("u")
        victim = self.c.create(user, session_id=uid("victim")).session_id
        donor = self.c.create(user, session_id=uid("donor")).session_id
        self.c.append(victim, "victim's own words")
        self.c.append(donor, "donor's words, must not show up in victim")
        self.srv.stop()
        header, vrecs = self.records_of("messages", victim)
        _, drecs = self.records_of("messages", donor)
        self.assertEqual((len(vrecs), len(drecs)), (1, 1))
        mdb_put(self.srv.data_dir, "messages", header, [(vrecs[0][0], drecs[0][1])])
        self.restart()
        self.assertStatus(DATA_LOSS, self.c.list_messages, victim)
        self.assertStatus(DATA_LOSS, self.c.context, victim)
        self.assertEqual([m.content for m in self.c.all_messages(donor)],
                         ["donor's words, must not show up in victim"])

    def test_flipped_session_metadata_is_data_loss(self):
        user = uid("u")
        victim = self.c.create(user, session_id=uid("victim"),
                               metadata={"big": "m" * 3000}).session_id
        other = self.c.create(user, session_id=uid("other"), metadata={"k": "v"}).session_id
        self.srv.stop()
        header, recs = mdb_dump(self.srv.data_dir, "sessions")
        mine = [(k, v) for k, v in recs if len(v) > 3000]
        self.assertEqual(len(mine), 1, "want exactly one big session record")
        mdb_put(self.srv.data_dir, "sessions", header, [(mine[0][0], flip_middle(mine[0][1]))])
        self.restart()
        self.assertStatus(DATA_LOSS, self.c.get, victim)
        self.assertEqual(dict(self.c.get(other).metadata), {"k": "v"})

    # -- keys ------------------------------------------------------------------------

    def test_wrong_key_is_refused_at_start(self):
        # The data dir records a check value per key: a different key under
        # the same id is refused before anything reads DATA_LOSS.
        sid = self.c.create(uid("u"), metadata={"k": "v"}).session_id
        self.c.append(sid, "written under the first key")
        self.srv.stop()
        keys, _ = read_keyring(self.srv.keyring_path)
        (kid,) = keys
        write_keyring(self.srv.keyring_path, {kid: os.urandom(32)}, kid)
        p = subprocess.run(self.srv.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(b"key %d in the keyring differs" % kid, p.stdout)

    def test_rotation_keeps_old_data_and_encrypts_with_primary(self):
        old_sid = self.c.create(uid("u"), metadata={"era": "old"}).session_id
        self.c.append(old_sid, "old message")
        self.c.update_summary(old_sid, "old summary", 1)
        self.srv.stop()
        keys, _ = read_keyring(self.srv.keyring_path)
        (old_id,) = keys
        new_id = old_id + 1
        new_key = os.urandom(32)
        write_keyring(self.srv.keyring_path, {old_id: keys[old_id], new_id: new_key}, new_id)
        self.restart()
        g = self.c.get(old_sid)
        self.assertEqual((dict(g.metadata), g.summary), ({"era": "old"}, "old summary"))
        self.assertEqual([m.content for m in self.c.all_messages(old_sid)], ["old message"])
        new_sid = self.c.create(uid("u"), metadata={"era": "new"}).session_id
        self.c.append(new_sid, "new message")
        self.assertSeqs(self.c.append(old_sid, "appended after rotation").messages, [2])
        self.assertEqual([m.content for m in self.c.all_messages(old_sid)],
                         ["old message", "appended after rotation"])
        self.srv.stop()
        # fields are sealed under their user's data key, before and after
        # the rotation (token header 0x02 | generation u32 BE: the users'
        # first keys); the master keys wrap those keys in the key store
        _, new_recs = self.records_of("messages", new_sid)
        _, old_recs = self.records_of("messages", old_sid)
        self.assertEqual((len(new_recs), len(old_recs)), (1, 2))
        first_key = b"\x02" + (1).to_bytes(4, "big")
        for _, rec in new_recs + old_recs:
            self.assertIn(first_key, rec)
        # dropping the old key is refused: data here is sealed with it
        write_keyring(self.srv.keyring_path, {new_id: new_key}, new_id)
        p = subprocess.run(self.srv.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn(b"key %d, which data here may be sealed with" % old_id, p.stdout)
