"""The OCA server and agents for the SDK tests: real processes on 127.0.0.1.

The server speaks HTTPS with the private CA it makes in its data directory, as it does
by default; the SDK trusts that CA through its `Config(ca=...)`.

The binaries come from $OCA_BIN and $OCA_AGENT_BIN (scripts/test-sdk.sh sets them).
"""
import json
import os
import subprocess
import tempfile
import time

import pytest
from alibabacloud_ecs20140526.client import Client
from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_tea_openapi.models import Config

REGION = "cn-hangzhou"


def _bin(var, name):
    path = os.environ.get(var) or os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", name)
    assert os.path.exists(path), f"{name} not built at {path}"
    return path


class Server:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="oca-sdk-")
        out = subprocess.run([_bin("OCA_BIN", "oca"), "keys", "create", "--data-dir", self.dir],
                             check=True, capture_output=True, text=True).stdout
        fields = dict(line.split(": ", 1) for line in out.strip().splitlines())
        self.key_id, self.secret = fields["AccessKeyId"], fields["AccessKeySecret"]
        self.proc = subprocess.Popen(
            [_bin("OCA_BIN", "oca"), "serve", "--data-dir", self.dir, "--listen", "127.0.0.1:0",
             "--heartbeat-secs", "1", "--delivery-timeout-ms", "3000",
             "--min-cron-interval-secs", "1"],
            stdout=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "warn"})
        line = self.proc.stdout.readline()
        assert line.startswith("OCA listening on https://"), line
        self.addr = line.strip().rsplit("/", 1)[-1]
        tls = self.proc.stdout.readline()
        assert "--fingerprint sha256:" in tls, tls
        self.fingerprint = tls.strip().rsplit(" ", 1)[-1]
        self.ca = os.path.join(self.dir, "tls", "ca.pem")
        self.agents = []

    def config(self, signature: str = "v3", **extra) -> Config:
        """What an SDK client is given: the endpoint over HTTPS and the server's CA."""
        cfg = Config(access_key_id=self.key_id, access_key_secret=self.secret,
                     endpoint=self.addr, protocol="https", ca=self.ca, region_id=REGION,
                     **extra)
        if signature == "v2":
            cfg.signature_algorithm = "v2"
        return cfg

    def client(self, signature: str = "v3") -> Client:
        cfg = self.config(signature)
        return Client(cfg)

    def agent(self, name: str, **activation) -> str:
        """Registers and starts an agent; `activation` goes to its CreateActivationRequest
        (e.g. resource_group_id)."""
        c = self.client()
        act = c.create_activation(ecs.CreateActivationRequest(
            region_id=REGION, instance_name=name, instance_count=1, **activation)).body
        state = tempfile.mkdtemp(prefix="oca-agent-")
        proc = subprocess.Popen(
            [_bin("OCA_AGENT_BIN", "oca-agent"), "--server", f"https://{self.addr}",
             "--fingerprint", self.fingerprint, "--state-dir", state,
             "--hostname", name, "--activation-id", act.activation_id, "--activation-code", act.activation_code],
            env={**os.environ, "RUST_LOG": "warn"})
        self.agents.append(proc)
        deadline = time.time() + 20
        while time.time() < deadline:
            body = c.describe_managed_instances(ecs.DescribeManagedInstancesRequest(
                region_id=REGION, instance_name=name, page_size=50)).body
            for i in body.instances or []:
                if i.instance_name == name and i.connected:
                    return i.instance_id
            time.sleep(0.1)
        raise AssertionError(f"agent {name} did not come online")

    def stop(self):
        for p in self.agents:
            p.kill()
            p.wait()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def server():
    s = Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def fleet(server):
    return [server.agent(n) for n in ("sdk-a", "sdk-b", "sdk-c")]


@pytest.fixture(params=["v3", "v2"])
def client(request, server):
    """Each test runs once with the SDK's default V3 signature and once with V1 ('v2')."""
    return server.client(request.param)


def swas_client_of(server, signature: str = "v3"):
    """An official SWAS-OPEN (2020-06-01) client on the same server and key."""
    from alibabacloud_swas_open20200601.client import Client as SwasClient
    return SwasClient(server.config(signature))


@pytest.fixture(params=["v3", "v2"])
def swas_client(request, server):
    """A SWAS client, once with the SDK's default V3 signature and once with V1 ('v2')."""
    return swas_client_of(server, request.param)
