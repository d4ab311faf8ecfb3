"""The errors a user can fix: each message is one line naming the file, key or value at fault."""


class KneuronsError(ValueError):
    """Bad input (data, model, config, dump); workflow jobs report it as one line, without a traceback."""


class DataError(KneuronsError):
    """Bad input data: the message names the file, key or value at fault."""


class ModelError(KneuronsError):
    """A model directory or architecture the method cannot use; the message names the path or module."""


class DumpError(KneuronsError):
    """A missing, truncated or incomplete HDF5 dump; the message names the file."""
