"""The official ECS SDK drives OCA: the judge of wire compatibility."""
import base64
import time
import uuid

import pytest
from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_ecs20140526.client import Client
from alibabacloud_tea_openapi.models import Config
from Tea.exceptions import TeaException

from conftest import REGION


def wait_results(client, invoke_id, limit=30):
    deadline = time.time() + limit
    while True:
        body = client.describe_invocation_results(ecs.DescribeInvocationResultsRequest(
            region_id=REGION, invoke_id=invoke_id, page_size=50)).body
        results = body.invocation.invocation_results.invocation_result
        if results and all(r.invoke_record_status != "Running" for r in results):
            return sorted(results, key=lambda r: r.instance_id)
        assert time.time() < deadline, f"{invoke_id} did not finish"
        time.sleep(0.2)


def run(client, script, instances, **kw):
    req = ecs.RunCommandRequest(region_id=REGION, type="RunShellScript", command_content=script,
                                content_encoding="PlainText", instance_id=instances, **kw)
    body = client.run_command(req).body
    assert body.invoke_id.startswith("t-") and body.command_id.startswith("c-")
    assert body.request_id
    return body.invoke_id


def test_run_command_success_everywhere(client, fleet):
    invoke_id = run(client, "echo hello; echo oops >&2", fleet)
    results = wait_results(client, invoke_id)
    assert len(results) == 3
    for r in results:
        assert r.invocation_status == "Success"
        assert r.invoke_record_status == "Finished"
        assert r.exit_code == 0
        assert base64.b64decode(r.output) == b"hello\noops\n"
        assert r.dropped == 0 and r.repeats == 1
        assert r.error_code == ""
    inv = client.describe_invocations(ecs.DescribeInvocationsRequest(
        region_id=REGION, invoke_id=invoke_id, include_output=True)).body
    assert inv.total_count == 1 and inv.page_number == 1 and inv.page_size == 10
    i = inv.invocations.invocation[0]
    assert (i.invoke_status, i.invocation_status, i.timed) == ("Finished", "Success", False)
    assert sorted(x.instance_id for x in i.invoke_instances.invoke_instance) == sorted(fleet)
    assert all(x.instance_invoke_status == "Finished" for x in i.invoke_instances.invoke_instance)


def test_nonzero_exit(client, fleet):
    invoke_id = run(client, "exit 7", fleet[:1])
    r = wait_results(client, invoke_id)[0]
    assert (r.invocation_status, r.exit_code, r.error_code) == ("Failed", 7, "ExitCodeNonzero")
    assert r.error_info == "the command execution exit code is not zero"


def test_stop_invocation(client, fleet):
    invoke_id = run(client, "sleep 1000", fleet[:2], timeout=600)
    deadline = time.time() + 20
    while True:
        body = client.describe_invocation_results(ecs.DescribeInvocationResultsRequest(
            region_id=REGION, invoke_id=invoke_id)).body
        if all(r.invocation_status == "Running" for r in body.invocation.invocation_results.invocation_result):
            break
        assert time.time() < deadline
        time.sleep(0.1)
    client.stop_invocation(ecs.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    for r in wait_results(client, invoke_id):
        assert r.invocation_status == "Terminated" and r.invoke_record_status == "Stopped"
        assert r.stop_time


def test_saved_command_with_parameters(client, fleet):
    created = client.create_command(ecs.CreateCommandRequest(
        region_id=REGION, name="sdk-greet", type="RunShellScript", enable_parameter=True,
        command_content=base64.b64encode(b"echo {{who}} on {{ACS::InstanceId}}").decode())).body
    invoke = client.invoke_command(ecs.InvokeCommandRequest(
        region_id=REGION, command_id=created.command_id, instance_id=fleet[:1],
        parameters={"who": "sdk"})).body
    r = wait_results(client, invoke.invoke_id)[0]
    assert base64.b64decode(r.output).decode() == f"sdk on {fleet[0]}\n"
    cmds = client.describe_commands(ecs.DescribeCommandsRequest(
        region_id=REGION, command_id=created.command_id)).body
    c = cmds.commands.command[0]
    assert (c.name, c.enable_parameter, c.parameter_names.parameter_name) == ("sdk-greet", True, ["who"])
    assert c.invoke_times >= 1
    client.modify_command(ecs.ModifyCommandRequest(region_id=REGION, command_id=created.command_id, name="renamed"))
    client.delete_command(ecs.DeleteCommandRequest(region_id=REGION, command_id=created.command_id))


def test_cloud_assistant_status(client, fleet):
    body = client.describe_cloud_assistant_status(ecs.DescribeCloudAssistantStatusRequest(
        region_id=REGION, instance_id=fleet)).body
    items = body.instance_cloud_assistant_status_set.instance_cloud_assistant_status
    assert sorted(i.instance_id for i in items) == sorted(fleet)
    assert all(i.cloud_assistant_status == "true" and i.ostype == "Linux" for i in items)


def expect_error(fn, code, status):
    with pytest.raises(TeaException) as e:
        fn()
    assert e.value.code == code, e.value
    assert getattr(e.value, "statusCode", None) == status, e.value
    assert (e.value.data or {}).get("RequestId"), e.value


def test_errors_reach_the_sdk(client, fleet):
    expect_error(lambda: client.describe_invocations(ecs.DescribeInvocationsRequest(
        region_id=REGION, page_size=51)), "InvalidParam.PageSize", 403)
    expect_error(lambda: client.describe_invocation_results(ecs.DescribeInvocationResultsRequest(
        region_id=REGION, page_number=0)), "InvalidParam.PageNumber", 403)
    expect_error(lambda: client.describe_invocations(ecs.DescribeInvocationsRequest(
        region_id="mars-1")), "InvalidRegionId.NotFound", 404)
    expect_error(lambda: client.stop_invocation(ecs.StopInvocationRequest(
        region_id=REGION, invoke_id="t-nope")), "InvalidInvokeId.NotFound", 404)
    expect_error(lambda: client.run_command(ecs.RunCommandRequest(
        region_id=REGION, type="RunNothing", command_content="x", instance_id=fleet[:1])),
        "InvalidCmdType.NotFound", 404)


def test_wrong_secret_is_refused(server):
    for sig in ("v3", "v2"):
        cfg = server.config(sig)
        cfg.access_key_secret = "wrong"
        bad = Client(cfg)
        expect_error(lambda: bad.describe_commands(ecs.DescribeCommandsRequest(region_id=REGION)),
                     "SignatureDoesNotMatch", 400)


def test_https_is_verified_against_the_servers_ca(server):
    """The SDK trusts the server through the CA it is given; without it (the system's
    roots) the handshake fails, and plain HTTP gets the vendor's NeedSsl error."""
    ok = Client(server.config())
    assert ok.describe_commands(ecs.DescribeCommandsRequest(region_id=REGION)).body.request_id
    # (By the name `localhost`, also in the certificate: the SDK pools connections by
    # host, and one verified with the CA must not be reused here.)
    port = server.addr.rsplit(":", 1)[-1]
    untrusting = Client(Config(access_key_id=server.key_id, access_key_secret=server.secret,
                               endpoint=f"localhost:{port}", protocol="https", region_id=REGION))
    with pytest.raises(Exception) as e:
        untrusting.describe_commands(ecs.DescribeCommandsRequest(region_id=REGION))
    assert "certificate" in str(e.value).lower() or "ssl" in str(e.value).lower(), e.value
    plain = Client(Config(access_key_id=server.key_id, access_key_secret=server.secret,
                          endpoint=server.addr, protocol="http", region_id=REGION))
    expect_error(lambda: plain.describe_commands(ecs.DescribeCommandsRequest(region_id=REGION)),
                 "InvalidProtocol.NeedSsl", 404)


def test_send_file(client, fleet, tmp_path):
    target = tmp_path / "sdk-files"
    sent = client.send_file(ecs.SendFileRequest(
        region_id=REGION, name="motd", target_dir=str(target), content="hello from sdk\n",
        file_mode="0640", overwrite=True, timeout=30, instance_id=fleet[:2],
        tag=[ecs.SendFileRequestTag(key="team", value="ops")])).body
    assert sent.invoke_id.startswith("f-") and sent.request_id
    deadline = time.time() + 30
    while True:
        body = client.describe_send_file_results(ecs.DescribeSendFileResultsRequest(
            region_id=REGION, invoke_id=sent.invoke_id)).body
        inv = body.invocations.invocation[0]
        if inv.invocation_status not in ("Pending", "Running"):
            break
        assert time.time() < deadline, "the file was not delivered"
        time.sleep(0.2)
    assert body.total_count == 1 and body.page_number == 1 and body.page_size == 10
    assert (inv.invoke_id, inv.name, inv.invocation_status) == (sent.invoke_id, "motd", "Success")
    assert (inv.content, inv.content_type, inv.target_dir) == ("hello from sdk\n", "PlainText", str(target))
    assert (inv.file_owner, inv.file_group, inv.file_mode, inv.overwrite) == ("root", "root", "0640", "true")
    assert inv.vm_count == 2 and inv.creation_time
    assert [(t.tag_key, t.tag_value) for t in inv.tags.tag] == [("team", "ops")]
    instances = inv.invoke_instances.invoke_instance
    assert sorted(i.instance_id for i in instances) == sorted(fleet[:2])
    for i in instances:
        assert (i.invocation_status, i.error_code) == ("Success", "")
        assert i.start_time and i.finish_time and i.creation_time and i.update_time
    assert (target / "motd").read_bytes() == b"hello from sdk\n"
    assert (target / "motd").stat().st_mode & 0o777 == 0o640
    by_status = client.describe_send_file_results(ecs.DescribeSendFileResultsRequest(
        region_id=REGION, name="motd", invocation_status="Success", max_results=5)).body
    assert sent.invoke_id in [i.invoke_id for i in by_status.invocations.invocation]


def test_periodic_invocation(client, fleet, tmp_path):
    log = tmp_path / "runs"
    body = client.run_command(ecs.RunCommandRequest(
        region_id=REGION, type="RunShellScript", content_encoding="PlainText",
        command_content=f"echo run >> {log}", instance_id=fleet[:1],
        repeat_mode="Period", frequency="*/1 * * * * ?", timeout=10)).body
    invoke_id = body.invoke_id
    deadline = time.time() + 30
    while True:
        hist = client.describe_invocation_results(ecs.DescribeInvocationResultsRequest(
            region_id=REGION, invoke_id=invoke_id, include_history=True, page_size=50)).body
        runs = hist.invocation.invocation_results.invocation_result
        if len(runs) >= 2:
            break
        assert time.time() < deadline, "no runs"
        time.sleep(0.2)
    assert sorted(r.repeats for r in runs)[:2] == [1, 2]
    assert all(r.invocation_status == "Success" for r in runs)
    inv = client.describe_invocations(ecs.DescribeInvocationsRequest(
        region_id=REGION, invoke_id=invoke_id)).body.invocations.invocation[0]
    assert (inv.repeat_mode, inv.timed, inv.frequency, inv.invoke_status) == (
        "Period", True, "*/1 * * * * ?", "Running")
    client.modify_invocation_attribute(ecs.ModifyInvocationAttributeRequest(
        region_id=REGION, invoke_id=invoke_id, frequency="*/2 * * * * ?"))
    inv = client.describe_invocations(ecs.DescribeInvocationsRequest(
        region_id=REGION, invoke_id=invoke_id)).body.invocations.invocation[0]
    assert inv.frequency == "*/2 * * * * ?"
    client.stop_invocation(ecs.StopInvocationRequest(region_id=REGION, invoke_id=invoke_id))
    deadline = time.time() + 30
    while client.describe_invocations(ecs.DescribeInvocationsRequest(
            region_id=REGION, invoke_id=invoke_id)).body.invocations.invocation[0].invoke_status != "Stopped":
        assert time.time() < deadline, "not stopped"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def grouped(server):
    """One agent in each of two resource groups."""
    return {g: server.agent(f"sdk-{g}", resource_group_id=g) for g in ("rg-sdk-a", "rg-sdk-b")}


def test_resource_groups(client, grouped, tmp_path):
    a, b = grouped["rg-sdk-a"], grouped["rg-sdk-b"]
    managed = client.describe_managed_instances(ecs.DescribeManagedInstancesRequest(
        region_id=REGION, resource_group_id="rg-sdk-a", page_size=50)).body
    assert managed.total_count == 1
    assert [(i.instance_id, i.resource_group_id) for i in managed.instances] == [(a, "rg-sdk-a")]

    # RunCommand in a group: on its instance it runs; another group's instance is not found.
    invoke_id = run(client, "echo in-a", [a], resource_group_id="rg-sdk-a", keep_command=True)
    r = wait_results(client, invoke_id)[0]
    assert (r.instance_id, r.invocation_status) == (a, "Success")
    expect_error(lambda: run(client, "echo no", [b], resource_group_id="rg-sdk-a"),
                 "InvalidInstance.NotFound", 404)
    expect_error(lambda: client.describe_invocations(ecs.DescribeInvocationsRequest(
        region_id=REGION, resource_group_id="not a group")), "InvalidResourceGroup.NotFound", 404)

    invs = client.describe_invocations(ecs.DescribeInvocationsRequest(
        region_id=REGION, resource_group_id="rg-sdk-a", page_size=50)).body
    assert invoke_id in [i.invoke_id for i in invs.invocations.invocation]
    assert all(x.instance_id == a for i in invs.invocations.invocation
               for x in i.invoke_instances.invoke_instance)
    res = client.describe_invocation_results(ecs.DescribeInvocationResultsRequest(
        region_id=REGION, resource_group_id="rg-sdk-a", page_size=50)).body
    results = res.invocation.invocation_results.invocation_result
    assert invoke_id in [x.invoke_id for x in results] and all(x.instance_id == a for x in results)
    assert client.describe_invocation_results(ecs.DescribeInvocationResultsRequest(
        region_id=REGION, resource_group_id="rg-sdk-b", invoke_id=invoke_id)).body.invocation.total_count == 0

    # A saved command of group b, tagged: listed by group and by tag, invoked in b.
    created = client.create_command(ecs.CreateCommandRequest(
        region_id=REGION, name="sdk-grouped", type="RunShellScript", resource_group_id="rg-sdk-b",
        command_content=base64.b64encode(b"echo in-b").decode(),
        tag=[ecs.CreateCommandRequestTag(key="team", value="sdk-b")])).body
    cmds = client.describe_commands(ecs.DescribeCommandsRequest(
        region_id=REGION, resource_group_id="rg-sdk-b",
        tag=[ecs.DescribeCommandsRequestTag(key="team", value="sdk-b")])).body.commands.command
    assert created.command_id in [c.command_id for c in cmds]
    assert all(c.resource_group_id == "rg-sdk-b" for c in cmds)
    assert [(t.tag_key, t.tag_value) for t in cmds[0].tags.tag] == [("team", "sdk-b")]
    assert created.command_id not in [c.command_id for c in client.describe_commands(
        ecs.DescribeCommandsRequest(region_id=REGION, resource_group_id="rg-sdk-a",
                                    page_size=50)).body.commands.command]
    invoked = client.invoke_command(ecs.InvokeCommandRequest(
        region_id=REGION, command_id=created.command_id, instance_id=[b],
        resource_group_id="rg-sdk-b")).body
    assert base64.b64decode(wait_results(client, invoked.invoke_id)[0].output) == b"in-b\n"
    client.delete_command(ecs.DeleteCommandRequest(region_id=REGION, command_id=created.command_id))

    # SendFile in a group, listed by it.
    sent = client.send_file(ecs.SendFileRequest(
        region_id=REGION, name="grouped", target_dir=str(tmp_path), content="b\n",
        instance_id=[b], resource_group_id="rg-sdk-b")).body
    expect_error(lambda: client.send_file(ecs.SendFileRequest(
        region_id=REGION, name="grouped", target_dir=str(tmp_path), content="a\n",
        instance_id=[a], resource_group_id="rg-sdk-b")), "InvalidInstance.NotFound", 404)
    files = client.describe_send_file_results(ecs.DescribeSendFileResultsRequest(
        region_id=REGION, resource_group_id="rg-sdk-b", max_results=50)).body
    assert sent.invoke_id in [i.invoke_id for i in files.invocations.invocation]
    assert all(x.instance_id == b for i in files.invocations.invocation
               for x in i.invoke_instances.invoke_instance)


def test_managed_instance_filters_and_tags(client, fleet):
    client.tag_resources(ecs.TagResourcesRequest(
        region_id=REGION, resource_type="instance", resource_id=[fleet[1]],
        tag=[ecs.TagResourcesRequestTag(key="role", value="db")]))
    body = client.describe_managed_instances(ecs.DescribeManagedInstancesRequest(
        region_id=REGION, connected="true",
        tag=[ecs.DescribeManagedInstancesRequestTag(key="role", value="db")])).body
    assert [i.instance_id for i in body.instances] == [fleet[1]]
    i = body.instances[0]
    assert i.connected is True
    assert [(t.tag_key, t.tag_value) for t in i.tags] == [("role", "db")]
    named = client.describe_managed_instances(ecs.DescribeManagedInstancesRequest(
        region_id=REGION, instance_name=i.instance_name)).body
    assert [x.instance_id for x in named.instances] == [fleet[1]]


def test_fleet_management(client, server):
    """Activations listed, disabled and deleted; a managed instance renamed and
    deregistered, every answer read through the SDK's models."""
    name = f"sdk-fleet-{uuid.uuid4().hex[:8]}"
    instance_id = server.agent(name, tag=[ecs.CreateActivationRequestTag(key="team", value="sdk")])
    act_id = client.describe_managed_instances(ecs.DescribeManagedInstancesRequest(
        region_id=REGION, instance_id=[instance_id])).body.instances[0].activation_id

    acts = client.describe_activations(ecs.DescribeActivationsRequest(
        region_id=REGION, activation_id=act_id)).body
    assert (acts.total_count, acts.page_number, acts.page_size) == (1, 1, 10) and acts.request_id
    a = acts.activation_list[0]
    assert (a.activation_id, a.instance_name, a.instance_count, a.registered_count,
            a.deregistered_count, a.disabled) == (act_id, name, 1, 1, 0, False)
    assert (a.time_to_live_in_hours, a.ip_address_range, a.resource_group_id) == (4, "0.0.0.0/0", "")
    assert a.creation_time.endswith("Z")
    assert [(t.tag_key, t.tag_value) for t in a.tags] == [("team", "sdk")]
    tagged = client.describe_activations(ecs.DescribeActivationsRequest(
        region_id=REGION, max_results=50,
        tag=[ecs.DescribeActivationsRequestTag(key="team", value="sdk")])).body
    assert act_id in [x.activation_id for x in tagged.activation_list]

    expect_error(lambda: client.delete_activation(ecs.DeleteActivationRequest(
        region_id=REGION, activation_id=act_id)), "ActivationId.InUse", 403)
    disabled = client.disable_activation(ecs.DisableActivationRequest(
        region_id=REGION, activation_id=act_id)).body
    assert (disabled.activation.activation_id, disabled.activation.disabled,
            disabled.activation.registered_count) == (act_id, True, 1)

    renamed = client.modify_managed_instance(ecs.ModifyManagedInstanceRequest(
        region_id=REGION, instance_id=instance_id, instance_name=f"{name}-renamed")).body
    assert (renamed.instance.instance_id, renamed.instance.instance_name) == (instance_id, f"{name}-renamed")
    expect_error(lambda: client.modify_managed_instance(ecs.ModifyManagedInstanceRequest(
        region_id=REGION, instance_id=instance_id, instance_name="9-lives")), "InstanceName.InvalidPattern", 400)

    gone = client.deregister_managed_instance(ecs.DeregisterManagedInstanceRequest(
        region_id=REGION, instance_id=instance_id)).body
    i = gone.instance
    assert (i.instance_id, i.instance_name, i.hostname, i.activation_id) == (
        instance_id, f"{name}-renamed", name, act_id)
    assert i.registration_time and i.os_type == "Linux" and i.invocation_count == 0
    assert not client.describe_managed_instances(ecs.DescribeManagedInstancesRequest(
        region_id=REGION, instance_id=[instance_id])).body.instances
    expect_error(lambda: run(client, "echo no", [instance_id]), "InvalidInstance.NotFound", 404)
    expect_error(lambda: client.deregister_managed_instance(ecs.DeregisterManagedInstanceRequest(
        region_id=REGION, instance_id=instance_id)), "InvalidInstance.NotFound", 404)

    deleted = client.delete_activation(ecs.DeleteActivationRequest(
        region_id=REGION, activation_id=act_id)).body
    assert (deleted.activation.activation_id, deleted.activation.registered_count,
            deleted.activation.deregistered_count) == (act_id, 1, 1)
    expect_error(lambda: client.disable_activation(ecs.DisableActivationRequest(
        region_id=REGION, activation_id=act_id)), "ActivationId.NotFound", 404)
