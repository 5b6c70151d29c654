"""TIPCommon's `Job` base class, from its public interface (spec soar-api.md §7): a subclass
names itself, may override `_init_api_clients`, `_validate_params` and `_finalize`, and must
implement `_perform_job`. `start()` reads the parameter list of the installed job instance
(`GetInstalledJobs`, matched by the stdin's `unique_identifier`), extracts each parameter
into `self.params.<snake_case name>`, runs the job, and on any error logs "Main - Failed"
and re-raises (exit status 1)."""
import re
import types

from soar_sdk.SiemplifyJob import SiemplifyJob
from soar_sdk.SiemplifyUtils import unix_now

from ...extraction import extract_job_param


def _snake(name):
    name = name.replace(" ", "")
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


class Job:
    def __init__(self, name):
        self.name = name
        self.soar_job = SiemplifyJob()
        self.soar_job.script_name = name
        self.logger = self.soar_job.LOGGER
        self.params = types.SimpleNamespace()
        self.job_start_time = 0

    def _init_api_clients(self):
        return None

    def _validate_params(self):
        pass

    def _perform_job(self):
        raise NotImplementedError

    def _finalize(self):
        pass

    def _installed_parameters(self):
        installed = self.soar_job._request("GET", "external/v1/jobs/GetInstalledJobs") or []
        for job in installed:
            if job.get("uniqueIdentifier") == self.soar_job.unique_identifier:
                return job.get("parameters") or []
        raise Exception(
            "The job instance {} was not found! Make sure the job is toggled on and saved its "
            "instance".format(self.soar_job.unique_identifier))

    def start(self):
        self.job_start_time = unix_now()
        for p in self._installed_parameters():
            name = p.get("displayName") or p.get("name")
            mandatory = p.get("mandatory", p.get("isMandatory", False))
            value = extract_job_param(self.soar_job, name, default_value=p.get("value"),
                                      is_mandatory=mandatory)
            setattr(self.params, _snake(name), value)
        try:
            self.api_client = self._init_api_clients()
            self._validate_params()
            self._perform_job()
        except Exception as error:
            self.logger.error("Main - Failed")
            self.logger.exception(error)
            raise RuntimeError from error
        finally:
            self._finalize()
        self.soar_job.end_script()
