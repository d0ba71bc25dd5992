"""
Certificates for the TLS tests, made with the openssl command at test time
in a temp dir (no key is ever committed). `openssl ca` issues them, as it
takes a start and end date (OpenSSL 3.0's `x509 -req` cannot back-date a
certificate, which the expired-certificate case needs).
"""
import os
import subprocess

import grpc


def _openssl(*args):
    subprocess.run(("openssl",) + args, check=True, stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, timeout=30)


def _ec_key_args():
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


class CA:
    """A certificate authority in dir/name: cert (PEM path), key, and
    issue() for leaf certificates."""

    def __init__(self, dir, name):
        self.dir = os.path.join(dir, name)
        os.makedirs(self.dir)
        self.name = name
        self.cert = os.path.join(self.dir, "ca.pem")
        self.key = os.path.join(self.dir, "ca.key")
        _openssl("req", "-x509", *_ec_key_args(), "-keyout", self.key, "-out", self.cert,
                 "-days", "2", "-subj", "/CN=" + name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("1000\n")
        self.conf = os.path.join(self.dir, "ca.cnf")
        with open(self.conf, "w") as f:
            f.write("[ca]\ndefault_ca = d\n"
                    "[d]\ndatabase = {0}/index.txt\nnew_certs_dir = {0}\nserial = {0}/serial\n"
                    "certificate = {1}\nprivate_key = {2}\ndefault_md = sha256\n"
                    "policy = p\nunique_subject = no\ncopy_extensions = none\n"
                    "[p]\ncommonName = supplied\n".format(self.dir, self.cert, self.key))

    def pem(self):
        with open(self.cert, "rb") as f:
            return f.read()

    def issue(self, cn, sans, start=None, end=None, cert=None, key=None):
        """A leaf certificate for CN cn with the SANs given (openssl syntax:
        "URI:spiffe://...", "DNS:name", "IP:127.0.0.1"), valid for two days
        from now or from start to end ("YYYYMMDDHHMMSSZ"). Returns (cert
        path, key path); cert and key name the paths to write (default in
        the CA's dir, after cn)."""
        cert = cert or os.path.join(self.dir, cn + ".pem")
        key = key or os.path.join(self.dir, cn + ".key")
        csr = os.path.join(self.dir, cn + ".csr")
        ext = os.path.join(self.dir, cn + ".ext")
        _openssl("req", *_ec_key_args(), "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
        with open(ext, "w") as f:
            f.write("[e]\nbasicConstraints = CA:FALSE\n"
                    "extendedKeyUsage = serverAuth,clientAuth\n")
            if sans:
                f.write("subjectAltName = %s\n" % ",".join(sans))
        dates = (["-startdate", start, "-enddate", end] if start else ["-days", "2"])
        _openssl("ca", "-batch", "-notext", "-config", self.conf, "-in", csr, "-out", cert,
                 "-extfile", ext, "-extensions", "e", *dates)
        return cert, key


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel_creds(ca, cert=None, key=None):
    """TLS channel credentials trusting CA object ca (or PEM bytes), with
    the client certificate (paths) when given."""
    roots = ca.pem() if isinstance(ca, CA) else ca
    if cert:
        return grpc.ssl_channel_credentials(roots, read(key), read(cert))
    return grpc.ssl_channel_credentials(roots)
