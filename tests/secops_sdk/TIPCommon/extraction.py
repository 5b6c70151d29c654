"""`extract_configuration_param` / `extract_job_param`, as TIPCommon's: the value, or the
default when it is empty; mandatory ones raise; booleans are "true"/"false"; integers by
`int()`; results stripped unless asked otherwise."""


def _convert(name, value, default_value, input_type, is_mandatory):
    if value is None or value == "":
        if is_mandatory:
            raise Exception("Missing mandatory parameter {}".format(name))
        return default_value
    if input_type is bool:
        text = str(value).strip().lower()
        if text not in ("true", "false"):
            raise Exception('Invalid parameter "{}". The value must be a boolean'.format(name))
        return text == "true"
    if input_type is int:
        try:
            return int(str(value).strip())
        except ValueError:
            raise Exception('Invalid parameter "{}". The value must be an integer'.format(name))
    return input_type(value)


def extract_configuration_param(siemplify, provider_name, param_name, default_value=None,
                                input_type=str, is_mandatory=False, print_value=False,
                                remove_whitespaces=True):
    """A parameter of the integration's configuration (`siemplify.get_configuration`)."""
    if not provider_name:
        raise Exception("provider_name cannot be None/empty")
    configuration = siemplify.get_configuration(provider_name) or {}
    value = _convert(param_name, configuration.get(param_name), default_value, input_type,
                     is_mandatory)
    if remove_whitespaces and isinstance(value, str):
        value = value.strip()
    if print_value:
        siemplify.LOGGER.info("{}: {}".format(param_name, value))
    return value


def extract_job_param(siemplify, param_name, default_value=None, input_type=str,
                      is_mandatory=False, print_value=False, remove_whitespaces=True):
    """A job parameter (from the script's stdin context)."""
    value = _convert(param_name, siemplify.parameters.get(param_name), default_value,
                     input_type, is_mandatory)
    if remove_whitespaces and isinstance(value, str):
        value = value.strip()
    if print_value:
        siemplify.LOGGER.info("{}: {}".format(param_name, value))
    return value
