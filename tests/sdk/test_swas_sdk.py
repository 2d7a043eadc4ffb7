"""The official SWAS-OPEN (2020-06-01) SDK drives OCA's Cloud Assistant actions, over the
same records as the ECS API."""
import base64
import time

import pytest
from alibabacloud_ecs20140526 import models as ecs
from alibabacloud_swas_open20200601 import models as swas
from Tea.exceptions import TeaException

from conftest import REGION


def wait_result(c, invoke_id, instance_id, limit=30):
    deadline = time.time() + limit
    while True:
        r = c.describe_invocation_result(swas.DescribeInvocationResultRequest(
            region_id=REGION, invoke_id=invoke_id, instance_id=instance_id)).body.invocation_result
        if r.invoke_record_status != "Running":
            return r
        assert time.time() < deadline, f"{invoke_id} did not finish"
        time.sleep(0.2)


def test_run_command_and_result(swas_client, fleet):
    inst = fleet[0]
    body = swas_client.run_command(swas.RunCommandRequest(
        region_id=REGION, instance_id=inst, name="sdk-swas", type="RunShellScript",
        command_content="echo hi {{who}}", enable_parameter=True, parameters={"who": "there"},
        working_user="root", timeout=30)).body
    assert body.invoke_id.startswith("t-") and body.request_id
    r = wait_result(swas_client, body.invoke_id, inst)
    assert (r.invocation_status, r.invoke_record_status, r.exit_code) == ("Success", "Finished", 0)
    assert r.invoke_user == "root" and r.instance_id == inst and r.invoke_id == body.invoke_id
    assert base64.b64decode(r.output) == b"hi there\n"
    assert r.start_time and r.finished_time and r.error_code == ""

    inv = swas_client.describe_invocations(swas.DescribeInvocationsRequest(
        region_id=REGION, instance_id=inst, invoke_status="Finished", page_size=50)).body
    assert inv.page_number == 1 and inv.page_size == 50 and inv.total_count >= 1
    mine = [i for i in inv.invocations if i.invoke_id == body.invoke_id]
    assert len(mine) == 1
    i = mine[0]
    assert (i.invoke_status, i.invocation_status, i.command_type, i.command_name) == \
        ("Finished", "Success", "RunShellScript", "sdk-swas")
    assert base64.b64decode(i.command_content) == b"echo hi {{who}}"
    assert i.parameters == {"who": "there"} and i.creation_time
    failed = swas_client.describe_invocations(swas.DescribeInvocationsRequest(
        region_id=REGION, instance_id=inst, invoke_status="Failed")).body
    assert all(x.invoke_id != body.invoke_id for x in failed.invocations or [])


def test_nonzero_exit(swas_client, fleet):
    body = swas_client.run_command(swas.RunCommandRequest(
        region_id=REGION, instance_id=fleet[1], name="fails", type="RunShellScript",
        command_content="exit 3")).body
    r = wait_result(swas_client, body.invoke_id, fleet[1])
    assert (r.invocation_status, r.exit_code, r.error_code) == ("Failed", 3, "ExitCodeNonzero")


def test_saved_command_lifecycle(swas_client, server, fleet):
    created = swas_client.create_command(swas.CreateCommandRequest(
        region_id=REGION, name="saved-swas", type="RunShellScript",
        command_content=base64.b64encode(b"echo saved").decode(), timeout=20)).body
    cid = created.command_id
    assert cid.startswith("c-")
    swas_client.update_command_attribute(swas.UpdateCommandAttributeRequest(
        region_id=REGION, command_id=cid, name="renamed-swas", description="d"))
    # Seen through ECS.
    e = server.client().describe_commands(ecs.DescribeCommandsRequest(region_id=REGION, command_id=cid)).body
    assert e.commands.command[0].name == "renamed-swas"
    inv = swas_client.invoke_command(swas.InvokeCommandRequest(
        region_id=REGION, command_id=cid, instance_ids=f'["{fleet[0]}","{fleet[2]}"]')).body
    for inst in (fleet[0], fleet[2]):
        r = wait_result(swas_client, inv.invoke_id, inst)
        assert base64.b64decode(r.output) == b"saved\n"
    swas_client.delete_command(swas.DeleteCommandRequest(region_id=REGION, command_id=cid))
    with pytest.raises(TeaException) as e:
        swas_client.invoke_command(swas.InvokeCommandRequest(
            region_id=REGION, command_id=cid, instance_ids=f'["{fleet[0]}"]'))
    assert e.value.code == "InvalidCmdId.NotFound" and e.value.statusCode == 404


def test_cloud_assistant_status(swas_client, fleet):
    body = swas_client.describe_cloud_assistant_status(swas.DescribeCloudAssistantStatusRequest(
        region_id=REGION, instance_ids=[fleet[0], "mi-missing"])).body
    st = {s.instance_id: s.status for s in body.cloud_assistant_status}
    assert st == {fleet[0]: True, "mi-missing": False}
    assert body.total_count == 2


def test_install_cloud_assistant(swas_client, fleet):
    body = swas_client.install_cloud_assistant(swas.InstallCloudAssistantRequest(
        region_id=REGION, instance_ids=fleet[:2])).body
    assert body.request_id
    with pytest.raises(TeaException) as e:
        swas_client.install_cloud_assistant(swas.InstallCloudAssistantRequest(
            region_id=REGION, instance_ids=[fleet[0], "mi-missing"]))
    assert e.value.code == "InvalidInstance.NotFound" and e.value.statusCode == 404


def test_errors(swas_client):
    with pytest.raises(TeaException) as e:
        swas_client.describe_invocation_result(swas.DescribeInvocationResultRequest(
            region_id=REGION, invoke_id="t-nope", instance_id="mi-nope"))
    assert e.value.code == "InvalidInvokeId.NotFound" and e.value.statusCode == 404
    with pytest.raises(TeaException) as e:
        swas_client.run_command(swas.RunCommandRequest(
            region_id=REGION, instance_id="mi-nope", name="x", type="RunShellScript",
            command_content="true"))
    assert e.value.code == "InvalidInstance.NotFound"
    with pytest.raises(TeaException) as e:
        swas_client.describe_invocations(swas.DescribeInvocationsRequest(region_id=REGION))
    assert e.value.code == "MissingParameter" and e.value.statusCode == 400


def test_describe_commands_and_command_invocations(swas_client, fleet):
    cid = swas_client.create_command(swas.CreateCommandRequest(
        region_id=REGION, name="listed-swas", type="RunShellScript",
        command_content=base64.b64encode(b"echo {{x}}").decode(), enable_parameter=True)).body.command_id
    cmds = swas_client.describe_commands(swas.DescribeCommandsRequest(
        region_id=REGION, provider="User", command_id=cid)).body
    assert cmds.total_count == 1 and cmds.page_number == 1
    c = cmds.commands[0]
    assert (c.command_id, c.name, c.type, c.enable_parameter, c.provider) == \
        (cid, "listed-swas", "RunShellScript", True, "User")
    assert c.parameter_names == ["x"] and c.tags == [] and c.timeout == 60
    inv = swas_client.invoke_command(swas.InvokeCommandRequest(
        region_id=REGION, command_id=cid, instance_ids=f'["{fleet[0]}"]', parameters={"x": "42"})).body
    wait_result(swas_client, inv.invoke_id, fleet[0])
    body = swas_client.describe_command_invocations(swas.DescribeCommandInvocationsRequest(
        region_id=REGION, command_id=cid, invocation_status="Success")).body
    assert body.total_count == 1
    ci = body.command_invocations[0]
    assert (ci.invoke_id, ci.command_name, ci.invocation_status) == (inv.invoke_id, "listed-swas", "Success")
    assert isinstance(ci.parameters, str) and ci.parameters == '{"x":"42"}'
    i = ci.invoke_instances[0]
    assert (i.instance_id, i.invocation_status, i.exit_code) == (fleet[0], "Success", 0)
    assert base64.b64decode(i.output) == b"42\n"
    swas_client.delete_command(swas.DeleteCommandRequest(region_id=REGION, command_id=cid))


def test_cloud_assistant_attributes(swas_client, fleet):
    body = swas_client.describe_cloud_assistant_attributes(swas.DescribeCloudAssistantAttributesRequest(
        region_id=REGION, instance_ids=fleet)).body
    assert body.total_count == 3
    assert sorted(a.instance_id for a in body.cloud_assistant) == sorted(fleet)
    for a in body.cloud_assistant:
        assert a.cloud_assistant_status == "true" and a.ostype == "Linux"
        assert a.cloud_assistant_version and a.last_heartbeat_time
