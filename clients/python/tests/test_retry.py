"""The retry backoff (no server): exponential with full jitter, RetryInfo's
delay a floor under the jitter, capped."""
import unittest

import grpc

import _support  # noqa: F401  (sys.path)
from engram import _core, _errors

BASE, CAP = 0.1, 2.0
SAMPLES = 400


def core(retries=10):
    return _core._Core(token=None, deadline=None, retries=retries, consistency="client",
                       backoff=(BASE, CAP), on_retry=None)


def unavailable(retry_delay=None):
    return _errors.from_status(grpc.StatusCode.UNAVAILABLE, "x", ()) if retry_delay is None \
        else _errors.UnavailableError(grpc.StatusCode.UNAVAILABLE, "x", retry_delay=retry_delay)


class BackoffTest(unittest.TestCase):
    def delays(self, c, err, attempt):
        return [c.retry_delay(_core.Kind.READ, err, attempt, None) for _ in range(SAMPLES)]

    def test_grows_and_spreads_without_retry_info(self):
        c = core()
        tops = []
        for attempt in range(6):
            d = self.delays(c, unavailable(), attempt)
            bound = min(CAP, BASE * 2 ** attempt)
            self.assertTrue(all(0 <= x <= bound for x in d), (attempt, max(d)))
            # Full jitter: the delays cover [0, bound], not one value.
            self.assertLess(min(d), bound * 0.2)
            self.assertGreater(max(d), bound * 0.8)
            tops.append(max(d))
        self.assertEqual(tops, sorted(tops))  # grows with the attempt ...
        self.assertLessEqual(tops[-1], CAP)  # ... up to the cap

    def test_retry_info_is_a_floor_with_jitter_above_it(self):
        """Every client that got RetryInfo 1 s must not retry at exactly 1 s
        (a synchronized storm): the delay is at least 1 s, spread above."""
        c = core()
        err = unavailable(retry_delay=1.0)
        for attempt in range(6):
            d = self.delays(c, err, attempt)
            bound = min(CAP, BASE * 2 ** attempt)
            self.assertTrue(all(1.0 <= x <= 1.0 + bound for x in d), (attempt, min(d), max(d)))
            self.assertGreater(len(set(d)), SAMPLES // 2)
            self.assertGreater(max(d) - min(d), bound * 0.6)

    def test_no_retry_past_the_attempts_or_for_plain_writes(self):
        c = core(retries=2)
        self.assertIsNone(c.retry_delay(_core.Kind.READ, unavailable(), 2, None))
        self.assertIsNone(c.retry_delay(_core.Kind.WRITE, unavailable(), 0, None))
        nf = _errors.from_status(grpc.StatusCode.NOT_FOUND, "x", ())
        self.assertIsNone(c.retry_delay(_core.Kind.READ, nf, 0, None))


def deadline(**kw):
    return _errors.from_status(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", ()) \
        if not kw else _errors.DeadlineExceededError(grpc.StatusCode.DEADLINE_EXCEEDED, **kw)


class GiveUpTest(unittest.TestCase):
    """What a call raises when it stops retrying."""

    def test_the_deadline_after_retries_stays_a_deadline_carrying_the_last_error(self):
        """A caller that catches DeadlineExceededError to tell "too slow"
        from "down" still catches it; the server's last error says why."""
        last = _errors.UnavailableError(grpc.StatusCode.UNAVAILABLE,
                                        "engram-min-lsn 21 not applied on this node yet",
                                        retry_delay=1.0, request_id="ab12")
        err = _core._Core.give_up(deadline(), last)
        self.assertIsInstance(err, _errors.DeadlineExceededError)
        self.assertIs(err.last_error, last)
        self.assertIs(err.__cause__, last)
        self.assertEqual(err.message, "Deadline Exceeded")
        self.assertIn("engram-min-lsn 21 not applied", str(err))
        self.assertIsNone(err.retry_delay)  # the last error's RetryInfo is not the call's

    def test_the_servers_own_deadline_keeps_its_message(self):
        """A DEADLINE_EXCEEDED from engramd (with a request id) is raised as
        engramd sent it, not replaced by an earlier attempt's error."""
        last = _errors.UnavailableError(grpc.StatusCode.UNAVAILABLE, "the write was not acknowledged; retry")
        own = deadline(message="the deadline passed before the primary answered; "
                               "the write may have been applied there", request_id="cd34")
        err = _core._Core.give_up(own, last)
        self.assertIs(err, own)
        self.assertIn("may have been applied", err.message)
        self.assertEqual(err.request_id, "cd34")
        self.assertIs(err.last_error, last)

    def test_a_first_attempt_or_another_code_carries_no_last_error(self):
        err = _core._Core.give_up(deadline(), None)
        self.assertIsNone(err.last_error)
        self.assertIsNone(err.__cause__)
        self.assertEqual(str(err), "DEADLINE_EXCEEDED: Deadline Exceeded")
        nf = _errors.from_status(grpc.StatusCode.NOT_FOUND, "x", ())
        self.assertIs(_core._Core.give_up(nf, unavailable()), nf)
        self.assertIsNone(nf.last_error)
