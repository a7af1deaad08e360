"""The one exception type for failures a user can cause and fix."""


class UserError(Exception):
    """A failure caused by the user's input (path, flag, config, data).

    main.py prints its message alone, without a traceback, and exits with status 2.
    The message names the file or flag at fault and says how to fix it.
    """
