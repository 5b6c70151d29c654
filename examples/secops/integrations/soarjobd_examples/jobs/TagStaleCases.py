"""Tag Stale Cases: a SecOps SOAR job script using only the SDK surface (SiemplifyJob,
output_handler, fetch/save_timestamp, the case search and AddTag). It runs unchanged on the
SecOps platform and under soarjobd's `secops-script` job."""
from soar_sdk.SiemplifyJob import SiemplifyJob
from soar_sdk.SiemplifyUtils import output_handler, unix_now

SCRIPT_NAME = "Tag Stale Cases"
HOUR_MS = 3600 * 1000


@output_handler
def main():
    siemplify = SiemplifyJob()
    siemplify.script_name = SCRIPT_NAME
    hours = siemplify.extract_job_param("Unmodified Hours", input_type=int, is_mandatory=True)
    tag = siemplify.extract_job_param("Tag", default_value="Stale")
    now = unix_now()
    previous = siemplify.fetch_timestamp()
    siemplify.LOGGER.info("previous run: {}".format(previous or "never"))
    ids = siemplify.get_cases_ids_by_filter(
        status="OPEN",
        start_time_from_unix_time_in_ms=now - 30 * 24 * HOUR_MS,
        update_time_to_unix_time_in_ms=now - hours * HOUR_MS,
        operator="AND",
        sort_by="UPDATE_TIME",
        sort_order="ASC",
    )
    for case_id in ids:
        siemplify.add_tag(tag, case_id)
        siemplify.LOGGER.info("tagged case {} as {}".format(case_id, tag))
    siemplify.save_timestamp(new_timestamp=now)
    siemplify.end("Tagged {} stale cases".format(len(ids)), len(ids))


if __name__ == "__main__":
    main()
