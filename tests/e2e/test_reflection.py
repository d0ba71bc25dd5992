"""gRPC server reflection (grpc.reflection.v1 and v1alpha), against a real
engramd, with a reflection client that knows nothing of engram's protos:

  ReflectionTest       list_services names every service engramd serves;
                       the files of each service, fetched by symbol, build a
                       descriptor pool alone (what grpcurl does), whose
                       messages make a real CreateSession + GetSession;
                       file_by_filename, symbols of every kind, extensions,
                       unknown names (NOT_FOUND error_response, the stream
                       goes on); no token needed on a server with --tokens
  ReflectionLimitsTest junk bytes (INVALID_ARGUMENT), a request over the
                       size cap and one past the count cap
                       (RESOURCE_EXHAUSTED), a client that sends nothing or
                       reads nothing (DEADLINE_EXCEEDED at
                       --call-timeout-ms), the cap on streams open at once
  ReflectionOffTest    --reflection=false: UNIMPLEMENTED, the rest serves
"""
import queue

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from harness import RPC_TIMEOUT, E2ETestCase, Server, uid
from relay import Relay
from grpc_reflection.v1 import reflection_pb2 as v1
from grpc_reflection.v1alpha import reflection_pb2 as v1alpha

PATHS = {v1: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
         v1alpha: "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}
SERVICES = ["engram.v1.SessionService", "grpc.health.v1.Health", "engram.v1.AdminService",
            "engram.v1.ReplicationService", "engram.v1.MemoryService", "engram.v1.UserService",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
            "engram.v1.CheckpointService", "engram.v1.StoreService"]
REQUEST_BYTES = 4096      # EG_REFLECTION_REQUEST_BYTES
REQUESTS = 1024           # EG_REFLECTION_REQUESTS
STREAMS = 8               # EG_REFLECTION_STREAMS_MAX
PEER_STREAMS = 2          # EG_REFLECTION_PEER_STREAMS
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]


def message_class(pool, desc):
    """The class of desc (protobuf 4.21 has only the factory's GetPrototype)."""
    get = getattr(message_factory, "GetMessageClass", None)
    return get(desc) if get else message_factory.MessageFactory(pool).GetPrototype(desc)


class Stream:
    """One ServerReflectionInfo stream: ask() sends a request and returns
    its response. pb is v1 or v1alpha; raw sends bytes as they are."""

    def __init__(self, channel, pb=v1, metadata=None, timeout=RPC_TIMEOUT):
        self.pb = pb
        self.q = queue.Queue()
        call = channel.stream_stream(PATHS[pb], request_serializer=lambda b: b,
                                     response_deserializer=pb.ServerReflectionResponse.FromString)
        self.responses = call(iter(self.q.get, None), timeout=timeout, metadata=metadata)

    def send(self, req):
        self.q.put(req if isinstance(req, bytes) else req.SerializeToString())

    def ask(self, **kw):
        self.send(self.pb.ServerReflectionRequest(**kw))
        return next(self.responses)

    def close(self):
        self.q.put(None)

    def end(self):
        """Closes it and waits for the server to end it: its place is free
        then (a class's tests share a server and its per-address places)."""
        self.close()
        self.status()

    def files(self, **kw):
        r = self.ask(**kw)
        if r.WhichOneof("message_response") != "file_descriptor_response":
            raise AssertionError("%r: %s" % (kw, r))
        return [descriptor_pb2.FileDescriptorProto.FromString(b)
                for b in r.file_descriptor_response.file_descriptor_proto]

    def status(self):
        """The stream's end: (code, details)."""
        try:
            for _ in self.responses:
                pass
        except grpc.RpcError as e:
            return e.code(), e.details()
        return grpc.StatusCode.OK, ""


def pool_of(files):
    """A pool from files alone, each added after what it imports."""
    pool = descriptor_pool.DescriptorPool()
    todo = {f.name: f for f in files}
    added = set()
    while todo:
        ready = [f for f in todo.values() if all(d in added for d in f.dependency)]
        if not ready:
            raise AssertionError("imports not answered: %s" % sorted(
                d for f in todo.values() for d in f.dependency if d not in added))
        for f in ready:
            pool.Add(f)
            added.add(f.name)
            del todo[f.name]
    return pool


class ReflectionTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        # With tokens: reflection, like health, still needs none.
        cls.token = "reflect-" + uid()
        cls.srv = Server(tokens=[("tenant-a", "agent", cls.token)])
        cls.addClassCleanup(cls.srv.close)
        cls.srv.start()
        cls.ch = grpc.insecure_channel(cls.srv.addr)
        cls.addClassCleanup(cls.ch.close)

    def stream(self, pb=v1):
        s = Stream(self.ch, pb)
        self.addCleanup(s.end)
        return s

    def test_list_services_names_every_served_service(self):
        for pb in (v1, v1alpha):
            with self.subTest(pb.DESCRIPTOR.package):
                r = self.stream(pb).ask(list_services="*", host="h1")
                self.assertEqual([s.name for s in r.list_services_response.service], SERVICES)
                self.assertEqual(r.valid_host, "h1")
                self.assertEqual(r.original_request.list_services, "*")

    def test_a_pool_built_from_reflection_alone_makes_real_calls(self):
        for pb in (v1, v1alpha):
            with self.subTest(pb.DESCRIPTOR.package):
                s = self.stream(pb)
                names = [x.name for x in s.ask(list_services="").list_services_response.service]
                files = {}
                for name in names:
                    for f in s.files(file_containing_symbol=name):
                        files.setdefault(f.name, f)
                pool = pool_of(files.values())
                for name in names:
                    self.assertEqual(pool.FindServiceByName(name).full_name, name)
                svc = pool.FindServiceByName("engram.v1.SessionService")
                create, get = svc.methods_by_name["CreateSession"], svc.methods_by_name["GetSession"]
                Req, Sess = message_class(pool, create.input_type), message_class(pool, create.output_type)
                GetReq = message_class(pool, get.input_type)
                req = Req()
                req.session.user_id = "u-" + uid()
                req.session.metadata["k"] = "v"
                md = [("authorization", "Bearer " + self.token)]
                call = lambda m, r, out: self.ch.unary_unary(  # noqa: E731
                    "/%s/%s" % (svc.full_name, m.name), request_serializer=lambda x: x.SerializeToString(),
                    response_deserializer=out.FromString)(r, timeout=RPC_TIMEOUT, metadata=md)
                made = call(create, req, Sess)
                self.assertTrue(made.session_id)
                got = call(get, GetReq(session_id=made.session_id), Sess)
                self.assertEqual((got.session_id, got.user_id, dict(got.metadata)),
                                 (made.session_id, req.session.user_id, {"k": "v"}))
                # The well-known types came along: create_time is a Timestamp.
                self.assertGreater(got.create_time.seconds, 0)
                # Comments came along too (--include_source_info).
                self.assertTrue(any(f.source_code_info.location for f in files.values()))

    def test_files_by_name_with_their_imports_first_the_file(self):
        s = self.stream()
        got = s.files(file_by_filename="engram/v1/session.proto")
        self.assertEqual(got[0].name, "engram/v1/session.proto")
        self.assertEqual(got[0].package, "engram.v1")
        names = [f.name for f in got]
        self.assertEqual(len(names), len(set(names)))
        self.assertTrue(set(got[0].dependency) <= set(names), names)
        self.assertIn("google/protobuf/timestamp.proto", names)
        for name in ["google/rpc/status.proto", "google/rpc/error_details.proto",
                     "grpc_health/v1/health.proto", "grpc_reflection/v1/reflection.proto",
                     "grpc_reflection/v1alpha/reflection.proto", "engram/v1/memory.proto"]:
            with self.subTest(name):
                self.assertEqual(s.files(file_by_filename=name)[0].name, name)
        # google.rpc.Status, with the Any it imports: errors' details decode.
        st = s.files(file_by_filename="google/rpc/status.proto")
        self.assertIn("google/protobuf/any.proto", [f.name for f in st])

    def test_symbols_of_every_kind(self):
        s = self.stream()
        want = {
            "engram.v1.SessionService": "engram/v1/session.proto",
            "engram.v1.SessionService.GetSession": "engram/v1/session.proto",
            "engram.v1.Session": "engram/v1/session.proto",
            "engram.v1.Session.user_id": "engram/v1/session.proto",
            "engram.v1.ListSessionsRequest.MetadataEquals": "engram/v1/session.proto",
            "engram.v1.SessionState": "engram/v1/session.proto",
            "engram.v1.MemoryService": "engram/v1/memory.proto",
            "grpc.health.v1.HealthCheckResponse.ServingStatus": "grpc_health/v1/health.proto",
            "grpc.health.v1.HealthCheckResponse.SERVING": "grpc_health/v1/health.proto",
            "google.rpc.BadRequest.FieldViolation": "google/rpc/error_details.proto",
            "google.protobuf.Timestamp": "google/protobuf/timestamp.proto",
            "grpc.reflection.v1alpha.ServerReflection": "grpc_reflection/v1alpha/reflection.proto",
        }
        for sym, fname in want.items():
            with self.subTest(sym):
                self.assertEqual(s.files(file_containing_symbol=sym)[0].name, fname)

    def test_unknown_names_are_not_found_and_the_stream_goes_on(self):
        s = self.stream()
        cases = [dict(file_by_filename="engram/v1/nope.proto"),
                 dict(file_containing_symbol="engram.v1.Nope"),
                 dict(file_containing_symbol=".engram.v1.Session"),
                 dict(file_containing_symbol="engram.storage.v1.WalRecord"),
                 dict(file_by_filename="engram/storage/v1/wal.proto"),
                 dict(file_by_filename="etcd/etcdserverpb/rpc.proto"),
                 dict(file_containing_extension=v1.ExtensionRequest(
                     containing_type="engram.v1.Session", extension_number=100)),
                 dict(all_extension_numbers_of_type="engram.v1.Nope"),
                 dict(all_extension_numbers_of_type="engram.v1.SessionService")]
        for kw in cases:
            with self.subTest(kw):
                r = s.ask(**kw)
                self.assertEqual(r.WhichOneof("message_response"), "error_response", r)
                self.assertEqual(r.error_response.error_code, NOT_FOUND)
                self.assertIn(next(iter(kw)), r.error_response.error_message)
        # No extensions anywhere: an empty list for a known type.
        r = s.ask(all_extension_numbers_of_type="engram.v1.Session")
        self.assertEqual(r.all_extension_numbers_response.base_type_name, "engram.v1.Session")
        self.assertEqual(list(r.all_extension_numbers_response.extension_number), [])
        # A request with no question (or a newer kind): UNIMPLEMENTED.
        r = s.ask(host="x")
        self.assertEqual(r.error_response.error_code, UNIMPLEMENTED)
        # Still answering, then a clean end when the client is done.
        self.assertEqual(s.files(file_containing_symbol="engram.v1.Session")[0].name,
                         "engram/v1/session.proto")
        s.close()
        self.assertEqual(s.status(), (grpc.StatusCode.OK, ""))


class ReflectionLimitsTest(E2ETestCase):
    CALL_TIMEOUT_MS = 1500

    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--call-timeout-ms", cls.CALL_TIMEOUT_MS)
        cls.addClassCleanup(cls.srv.close)
        cls.srv.start()
        cls.ch = grpc.insecure_channel(cls.srv.addr)
        cls.addClassCleanup(cls.ch.close)

    def stream(self, pb=v1):
        s = Stream(self.ch, pb)
        self.addCleanup(s.end)
        return s

    def held_stream(self, ch):
        """A stream that holds a place: asked once and answered. The places
        of the streams earlier tests closed come free as the server sees
        them end, so a refusal here is retried."""
        def admitted():
            s = Stream(ch, timeout=30)
            try:
                s.ask(list_services="")
            except grpc.RpcError:
                s.close()
                raise
            return s
        s = self.wait_until(admitted, 10, "a reflection place", nodes=(self.srv,))
        self.addCleanup(s.end)
        return s

    def test_junk_ends_the_stream_invalid_argument(self):
        s = self.stream()
        self.assertTrue(s.ask(list_services=""))
        s.send(b"\xff\xff\xff\xff")
        code, details = s.status()
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT, details)
        self.assertIn("request", details)

    def test_request_size_cap_at_its_edge(self):
        s = self.stream()
        fits = "a" * (REQUEST_BYTES - 3)  # tag 1 byte, length 2
        self.assertEqual(len(v1.ServerReflectionRequest(file_containing_symbol=fits).SerializeToString()),
                         REQUEST_BYTES)
        r = s.ask(file_containing_symbol=fits)
        self.assertEqual(r.error_response.error_code, NOT_FOUND)
        s.send(v1.ServerReflectionRequest(file_containing_symbol=fits + "a"))
        code, details = s.status()
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        self.assertIn("%d bytes, more than the %d" % (REQUEST_BYTES + 1, REQUEST_BYTES), details)

    def test_request_count_cap_at_its_edge(self):
        s = Stream(self.ch, timeout=60)
        self.addCleanup(s.close)
        req = v1.ServerReflectionRequest(list_services="")
        # Answers are small and read as they come: the count is the bound.
        for _ in range(REQUESTS):
            s.send(req)
        for i in range(REQUESTS):
            self.assertEqual(len(next(s.responses).list_services_response.service), len(SERVICES))
        s.send(req)
        code, details = s.status()
        self.assertEqual(code, grpc.StatusCode.RESOURCE_EXHAUSTED, details)
        self.assertIn("more than %d requests" % REQUESTS, details)

    test_request_count_cap_at_its_edge.timeout = 60

    def test_a_silent_client_is_ended_at_the_call_timeout(self):
        s = Stream(self.ch, timeout=30)
        self.addCleanup(s.close)
        code, details = s.status()
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED, details)
        self.assertIn("--call-timeout-ms", details)

    def peer_channels(self):
        """STREAMS channels, PEER_STREAMS each from other loopback addresses
        (one address holds at most PEER_STREAMS places): every place."""
        chans = []
        for i in range(STREAMS // PEER_STREAMS):
            r = Relay(self.srv.addr, "127.0.0.%d" % (i + 2))
            self.addCleanup(r.close)
            for _ in range(PEER_STREAMS):
                ch = grpc.insecure_channel(r.addr)
                self.addCleanup(ch.close)
                chans.append(ch)
        return chans

    def test_clients_that_never_read_are_ended_at_the_call_timeout(self):
        # Every place taken by a client that asks for whole files over and
        # over and reads nothing: the server's sends block on flow control,
        # and the places come free when --call-timeout-ms is up.
        stuck = []
        for ch in self.peer_channels():
            s = self.held_stream(ch)
            for _ in range(200):
                s.send(v1.ServerReflectionRequest(file_by_filename="engram/v1/session.proto"))
            stuck.append(s)

        def a_new_stream_answers():
            s = Stream(self.ch, timeout=RPC_TIMEOUT)
            try:
                return s.ask(list_services="").list_services_response.service
            finally:
                s.close()
        self.wait_until(a_new_stream_answers, 30, "a reflection place to come free")
        for s in stuck:
            code, details = s.status()
            self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED, details)
            self.assertIn("--call-timeout-ms", details)

    def test_streams_open_at_once_are_capped(self):
        held = []
        chans = self.peer_channels()
        for ch in chans:
            held.append(self.held_stream(ch))
        late = Stream(self.ch, timeout=30)
        self.addCleanup(late.close)
        code, details = late.status()
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE, details)
        self.assertIn("server reflection streams open (at most %d)" % STREAMS, details)
        held[0].close()
        self.assertEqual(held[0].status(), (grpc.StatusCode.OK, ""))
        again = Stream(chans[0], timeout=30)
        self.addCleanup(again.close)
        self.assertTrue(again.ask(list_services="").list_services_response.service)


class ReflectionOffTest(E2ETestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = Server("--reflection=false")
        cls.addClassCleanup(cls.srv.close)
        cls.srv.start()
        cls.ch = grpc.insecure_channel(cls.srv.addr)
        cls.addClassCleanup(cls.ch.close)

    def test_reflection_off_is_unimplemented(self):
        for pb in (v1, v1alpha):
            with self.subTest(pb.DESCRIPTOR.package):
                s = Stream(self.ch, pb)
                self.addCleanup(s.close)
                s.send(pb.ServerReflectionRequest(list_services=""))
                self.assertEqual(s.status()[0], grpc.StatusCode.UNIMPLEMENTED)
        self.assertTrue(self.srv.client().health())
