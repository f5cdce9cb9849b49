"""Drives two Python Bitrix24 clients, unmodified, against an emulator portal over TLS.

The official SDK (b24pysdk, on `requests`) and fast_bitrix24 (on `aiohttp`) each call
`app.info`, start the credit-approval template with `bizproc.workflow.start`, wait for the CFO's
task in `bizproc.task.list`, run a `batch` and the same commands one by one, and page through
`crm.deal.list`. Both build `https://` URLs themselves; the emulator's authority is trusted only
through the standard variables each library reads (`REQUESTS_CA_BUNDLE` for requests,
`SSL_CERT_FILE` for aiohttp's default context), which the caller sets.

Input, from the environment (crates/b24-emulator/tests/it/python_sdks.rs sets it):
  B24_DOMAIN          the portal's domain, `127.0.0.1:PORT`
  B24_CLIENT_ENDPOINT `https://127.0.0.1:PORT/rest/`
  B24_WEBHOOK         an incoming webhook of an administrator, `https://…/rest/1/<secret>/`
  B24_CLIENT_ID, B24_CLIENT_SECRET, B24_ACCESS_TOKEN   the installed app and its token (user 1)
  B24_TEMPLATE_ID     the credit-approval template
  B24_DOCUMENT_ID     the deal to start it on, JSON `["crm", "CCrmDocumentDeal", "DEAL_1"]`

Output: one JSON report on stdout, `{"b24pysdk": {...}, "fast_bitrix24": {...}}`. Anything the
libraries raise ends the script with a traceback and a non-zero status.
"""

import asyncio
import json
import os
import sys
import time
import urllib.parse
from importlib.metadata import version

from b24pysdk import BitrixApp, BitrixToken, BitrixWebhook, Client
from b24pysdk.errors import BitrixAPIError
from fast_bitrix24 import BitrixAsync
from fast_bitrix24.server_response import ErrorInServerResponseException

# The CFO's task appears once the handler has answered `bizproc.event.send`; wait this long.
TASK_POLLS = 100
TASK_POLL_INTERVAL = 0.1

ENV = os.environ
DOMAIN = ENV["B24_DOMAIN"]
DOCUMENT_ID = json.loads(ENV["B24_DOCUMENT_ID"])
DEAL_ID = int(DOCUMENT_ID[2].rsplit("_", 1)[1])
TEMPLATE_ID = int(ENV["B24_TEMPLATE_ID"])
# No template has this ID: starting it is the portal's 400 `ERROR_WRONG_WORKFLOW_ID`.
MISSING_TEMPLATE_ID = TEMPLATE_ID + 1000
TASK_SELECT = ["ID", "WORKFLOW_ID", "NAME", "USER_ID", "STATUS", "DOCUMENT_ID"]


def batch_commands(workflow_id):
    """What each SDK's batch runs, by key: (method, params). Read-only, so running the same
    commands again one by one must answer the same."""
    return {
        "deal": ("crm.deal.get", {"id": DEAL_ID}),
        "tasks": (
            "bizproc.task.list",
            {"select": TASK_SELECT, "filter": {"WORKFLOW_ID": workflow_id}},
        ),
        "scope": ("scope", {}),
        "profile": ("profile", {}),
    }


def b24pysdk_report():
    app = BitrixApp(client_id=ENV["B24_CLIENT_ID"], client_secret=ENV["B24_CLIENT_SECRET"])
    token = BitrixToken(domain=DOMAIN, auth_token=ENV["B24_ACCESS_TOKEN"], bitrix_app=app)
    client = Client(token)
    report = {"version": version("b24pysdk")}

    # app.info as the app: the SDK parses it into its typed schema (ints, bools, the status enum).
    info = client.app.info().value
    report["app_info"] = {
        "id": info.bitrix_id,
        "code": info.code,
        "version": info.version,
        "status": info.status.value,
        "installed": info.installed,
        "license": info.license,
        "language_id": info.language_id,
    }
    hook_user, hook_secret = ENV["B24_WEBHOOK"].rstrip("/").split("/")[-2:]
    webhook = Client(BitrixWebhook(domain=DOMAIN, webhook_token=f"{hook_user}/{hook_secret}"))
    hook_info = webhook.app.info().value
    report["webhook_app_info"] = {"scope": hook_info.scope, "license": hook_info.license}

    workflow_id = client.bizproc.workflow.start(
        template_id=TEMPLATE_ID, document_id=DOCUMENT_ID
    ).result
    report["workflow_id"] = workflow_id
    try:
        client.bizproc.workflow.start(template_id=MISSING_TEMPLATE_ID, document_id=DOCUMENT_ID).result
        report["missing_template"] = None
    except BitrixAPIError as error:
        report["missing_template"] = {
            "class": type(error).__name__,
            "status": error.response.status_code,
            "error": error.error,
            "error_description": error.error_description,
        }

    for _ in range(TASK_POLLS):
        response = client.bizproc.task.list(
            select=TASK_SELECT, filter={"WORKFLOW_ID": workflow_id}
        ).response
        if response.result:
            break
        time.sleep(TASK_POLL_INTERVAL)
    report["tasks"] = response.result
    report["tasks_total"] = response.total

    commands = batch_commands(workflow_id)
    requests_by_key = {
        "deal": client.crm.deal.get(bitrix_id=DEAL_ID),
        "tasks": client.bizproc.task.list(**commands["tasks"][1]),
        "scope": client.scope(),
        "profile": client.profile(),
    }
    batch = client.call_batch(requests_by_key).response.result
    report["batch"] = {
        "result": batch.result,
        "result_error": batch.result_error,
        "result_total": batch.result_total,
        "result_next": batch.result_next,
        "result_time": sorted(batch.result_time),
    }
    report["single"] = {key: token.call_method(*command)["result"] for key, command in commands.items()}

    # Every deal, through the SDK's own paging: the first page, then `next`/`total` in a batch;
    # and uncounted (`start=-1`, `>ID` the last one seen).
    deals = client.crm.deal.list(select=["ID", "TITLE"]).as_list().result
    report["deal_ids"] = [deal["ID"] for deal in deals]
    deals = client.crm.deal.list(select=["ID", "TITLE"]).as_list_fast().result
    report["deal_ids_uncounted"] = [deal["ID"] for deal in deals]
    return report


async def fast_bitrix24_report():
    webhook = BitrixAsync(ENV["B24_WEBHOOK"], verbose=False)

    async def access_token():
        return ENV["B24_ACCESS_TOKEN"]

    as_app = BitrixAsync(ENV["B24_CLIENT_ENDPOINT"], token_func=access_token, verbose=False)
    report = {"version": version("fast_bitrix24")}

    info = await as_app.call("app.info", raw=True)
    report["app_info"] = info["result"]
    report["webhook_app_info"] = (await webhook.call("app.info", raw=True))["result"]

    # call() sends even one item as a batch command (`method?query`), as the library always does.
    workflow_id = await webhook.call(
        "bizproc.workflow.start", {"TEMPLATE_ID": TEMPLATE_ID, "DOCUMENT_ID": DOCUMENT_ID}
    )
    report["workflow_id"] = workflow_id
    try:
        await webhook.call(
            "bizproc.workflow.start",
            {"TEMPLATE_ID": MISSING_TEMPLATE_ID, "DOCUMENT_ID": DOCUMENT_ID},
        )
        report["missing_template"] = None
    except ErrorInServerResponseException as error:
        # The batch's `result_error`, by command key.
        report["missing_template"] = error.args[0]

    commands = batch_commands(workflow_id)
    for _ in range(TASK_POLLS):
        tasks = await webhook.get_all(commands["tasks"][0], commands["tasks"][1])
        if tasks:
            break
        await asyncio.sleep(TASK_POLL_INTERVAL)
    report["tasks"] = tasks

    cmd = {
        key: f"{method}?{urllib.parse.urlencode(flatten(params))}" if params else method
        for key, (method, params) in commands.items()
    }
    raw = await webhook.call("batch", {"halt": 0, "cmd": cmd}, raw=True)
    result = raw["result"]
    report["batch"] = {
        "result": await webhook.call_batch({"halt": 0, "cmd": cmd}),
        "result_error": result["result_error"],
        "result_total": result["result_total"],
        "result_next": result["result_next"],
        "result_time": sorted(result["result_time"]),
    }
    report["single"] = {
        key: (await webhook.call(method, params, raw=True))["result"]
        for key, (method, params) in commands.items()
    }

    deals = await webhook.get_all("crm.deal.list", {"select": ["ID", "TITLE"]})
    report["deal_ids"] = [deal["ID"] for deal in deals]
    return report


def flatten(params, prefix=None):
    """PHP's bracket names for a batch command's query (`select[0]=ID&filter[WORKFLOW_ID]=…`)."""
    pairs = []
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for key, value in items:
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, (dict, list)):
            pairs.extend(flatten(value, name))
        else:
            pairs.append((name, value))
    return pairs


def main():
    report = {"b24pysdk": b24pysdk_report(), "fast_bitrix24": asyncio.run(fast_bitrix24_report())}
    json.dump(report, sys.stdout, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
