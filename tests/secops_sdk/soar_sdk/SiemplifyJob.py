"""`SiemplifyJob`: what a job script is given (stdin context, parameters, the SDK calls) and
how it ends (one output object on the real stdout)."""
import json
import sys

import SiemplifyUtils
from SiemplifyBase import CONTEXT_JOB, SiemplifyBase

EXECUTION_STATE_COMPLETED = 0
EXECUTION_STATE_INPROGRESS = 1
EXECUTION_STATE_FAILED = 2
EXECUTION_STATE_TIMEDOUT = 3


class SiemplifyJob(SiemplifyBase):
    def __init__(self):
        super().__init__()
        raw = sys.stdin.buffer.read().decode("utf-8-sig")
        context = json.loads(raw) if raw.strip() else {}
        self.context = context
        self.parameters = context.get("parameters") or {}
        self.unique_identifier = context.get("unique_identifier")
        self.use_proxy_settings = context.get("use_proxy_settings", False)
        self.vault_settings = context.get("vault_settings")
        self.message = ""
        self.result_value = True
        self.execution_state = EXECUTION_STATE_COMPLETED

    def extract_job_param(self, param_name, default_value=None, input_type=str,
                          is_mandatory=False, print_value=False):
        value = self.parameters.get(param_name)
        if value is None or value == "":
            if is_mandatory:
                raise Exception("Missing mandatory parameter {}".format(param_name))
            return default_value
        if input_type is bool:
            return str(value).lower() == "true"
        if print_value:
            self.LOGGER.info("{}: {}".format(param_name, value))
        return input_type(value)

    # Cases.
    def get_cases_ids_by_filter(self, status, start_time_from_unix_time_in_ms=None,
                                start_time_to_unix_time_in_ms=None,
                                close_time_from_unix_time_in_ms=None,
                                close_time_to_unix_time_in_ms=None,
                                update_time_from_unix_time_in_ms=None,
                                update_time_to_unix_time_in_ms=None,
                                operator=None, sort_by="START_TIME", sort_order="DESC",
                                max_results=1000, environments=None, tags=None):
        now = SiemplifyUtils.unix_now()
        body = {
            "start_time_from_unix_time_in_ms": start_time_from_unix_time_in_ms
            if start_time_from_unix_time_in_ms is not None else now - 30 * 86400 * 1000,
            "start_time_to_unix_time_in_ms": start_time_to_unix_time_in_ms
            if start_time_to_unix_time_in_ms is not None else now,
            "close_time_from_unix_time_in_ms": close_time_from_unix_time_in_ms,
            "close_time_to_unix_time_in_ms": close_time_to_unix_time_in_ms,
            "update_time_from_unix_time_in_ms": update_time_from_unix_time_in_ms,
            "update_time_to_unix_time_in_ms": update_time_to_unix_time_in_ms,
            "status": status,
            "operator": operator,
            "sort_by": sort_by,
            "sort_order": sort_order or "DESC",
            "max_results": min(max_results, 10000),
            "environments": environments,
            "tags": tags,
        }
        return self._request("POST", "external/v1/sdk/GetCasesIdByFilter?format=snake", body)

    def _get_case_by_id(self, case_id, get_source_file=False):
        return self._request(
            "GET",
            "external/v1/sdk/CaseFullDetails/{}/{}?format=snake".format(case_id, get_source_file),
        )

    def add_tag(self, tag, case_id, alert_identifier=None):
        body = {"case_id": case_id, "alert_identifier": alert_identifier, "tag": tag}
        self._request("POST", "external/v1/sdk/AddTag?format=snake", body)

    def add_comment(self, comment, case_id, alert_identifier=None):
        body = {"case_id": case_id, "alert_identifier": alert_identifier, "comment": comment}
        self._request("POST", "external/v1/cases/comments?format=snake", body)

    # Job context.
    def get_job_context_property(self, identifier, property_key):
        return self.get_context_property(CONTEXT_JOB, identifier, property_key)

    def set_job_context_property(self, identifier, property_key, property_value):
        return self.set_context_property(CONTEXT_JOB, identifier, property_key, property_value)

    def get_scoped_job_context_property(self, property_key):
        return self.get_job_context_property(self.unique_identifier, property_key)

    def set_scoped_job_context_property(self, property_key, property_value):
        return self.set_job_context_property(self.unique_identifier, property_key, property_value)

    def fetch_timestamp(self, datetime_format=False):
        value = self.get_job_context_property(self.script_name, "timestamp")
        try:
            return int(value) if value is not None else 0
        except (TypeError, ValueError):
            return 0

    def save_timestamp(self, datetime_format=False, timezone=False, new_timestamp=None):
        ts = new_timestamp if new_timestamp is not None else SiemplifyUtils.unix_now()
        self.set_job_context_property(self.script_name, "timestamp", json.dumps(ts))

    # The end of a run.
    def end(self, message, result_value, execution_state=EXECUTION_STATE_COMPLETED):
        out = {
            "Message": message,
            "ResultObjectJson": None,
            "ResultValue": result_value,
            "DebugOutput": SiemplifyUtils.debug_buffer.getvalue(),
            "ExecutionState": execution_state,
        }
        SiemplifyUtils.real_stdout.write(json.dumps(out))
        SiemplifyUtils.real_stdout.flush()
        sys.exit(0)

    def end_script(self):
        self.end(self.message, self.result_value, self.execution_state)
