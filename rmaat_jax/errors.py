"""The errors a user can fix. The command line prints each as one `error: ...` line and
exits with status 2; every message names the field, file or value and says what to do."""


class UserError(Exception):
  """Base class: a problem in what the user gave us (config, data files), not a bug."""


class ConfigError(UserError, ValueError):
  """An invalid or inconsistent config value."""


class DataMissingError(UserError, FileNotFoundError):
  """A dataset's files are absent; the message says how to obtain them."""


class DataFormatError(UserError, ValueError):
  """A dataset file exists but cannot be read: the message names the file (and line)."""
