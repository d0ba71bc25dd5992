"""A TCP relay on loopback whose connections to the server come from a
source address of its own (127.0.0.2, 127.0.0.3, ...: all of 127/8 is
loopback on Linux), so that one test is several peers to engramd, which
counts some places per peer address (reflection).

    with Relay(srv.addr, "127.0.0.2") as r:
        grpc.insecure_channel(r.addr)  # engramd sees peer ipv4:127.0.0.2

Bytes are copied as they come, one thread per direction; a side that does
not read stops the copy (sendall blocks), as a direct connection would."""
import socket
import threading


class Relay:

    def __init__(self, target, source_ip):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.source_ip = source_ip
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.addr = "127.0.0.1:%d" % self.listener.getsockname()[1]
        self.socks = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            up.bind((self.source_ip, 0))
            up.connect(self.target)
            with self.lock:
                self.socks += [client, up]
            for a, b in ((client, up), (up, client)):
                threading.Thread(target=self._copy, args=(a, b), daemon=True).start()

    @staticmethod
    def _copy(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
