"""The one error the converters raise for a checkpoint they cannot convert; its text is shown as
the converter's one-line message."""


class ConversionError(ValueError):
    pass
