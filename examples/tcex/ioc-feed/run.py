"""The IOC feed example's entry point (`programMain: run`), started by the platform (or by
soarjobd) as `python run.py` in the app folder, with no arguments."""
import os
import sys
import traceback


def use_lib_folder() -> None:
    """Put the app folder, then its dependency folder, first on sys.path.

    The folder is `lib_<major>.<minor>.<micro>` of the running Python, else `lib_<major>.<minor>`,
    else `lib_<major>`, else `lib_latest`, looked up in the working directory (the app folder).
    Without one, tcex must be importable another way (a virtual environment, PYTHONPATH).
    """
    v = sys.version_info
    for name in (f'lib_{v.major}.{v.minor}.{v.micro}', f'lib_{v.major}.{v.minor}',
                 f'lib_{v.major}', 'lib_latest'):
        if os.path.isdir(name):
            sys.path.insert(0, os.path.abspath(name))
            break
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def run() -> None:
    use_lib_folder()
    from tcex import TcEx  # pylint: disable=import-outside-toplevel
    from app import App  # pylint: disable=import-outside-toplevel

    # A developer's plain JSON inputs file; a launcher never sets it.
    config_file = os.environ.get('TCEX_APP_CONFIG_DEV')
    tcex = TcEx(config_file=config_file)
    try:
        app = App(tcex)
        app.run()
        tcex.exit(app.exit_code, app.exit_message)
    except Exception as ex:  # pylint: disable=broad-except
        tcex.log.error(traceback.format_exc())
        tcex.exit(1, f'Generic Error.  See logs for more details ({ex}).')


if __name__ == '__main__':
    run()
