"""Parsing and formatting of the durations and byte sizes used in stack config.

Durations use Prometheus' syntax (`30d`, `1h30m`, `500ms`) because every duration in this
project ends up in a Prometheus, Alertmanager or collector file. Byte sizes accept both
binary (`Ki`, `Mi`, `Gi`, `KiB`, ...) and decimal (`KB`, `MB`, `GB`) suffixes.
"""

import re

_DURATION_UNITS_SECONDS = {
    "y": 365 * 24 * 3600,
    "w": 7 * 24 * 3600,
    "d": 24 * 3600,
    "h": 3600,
    "m": 60,
    "s": 1,
    "ms": 0.001,
}

_DURATION_PATTERN = re.compile(
    r"^(?:(?P<y>\d+)y)?(?:(?P<w>\d+)w)?(?:(?P<d>\d+)d)?(?:(?P<h>\d+)h)?"
    r"(?:(?P<m>\d+)m)?(?:(?P<s>\d+)s)?(?:(?P<ms>\d+)ms)?$"
)

_BYTE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1000,
    "KB": 1000,
    "M": 1000**2,
    "MB": 1000**2,
    "G": 1000**3,
    "GB": 1000**3,
    "T": 1000**4,
    "TB": 1000**4,
    "Ki": 1024,
    "KiB": 1024,
    "Mi": 1024**2,
    "MiB": 1024**2,
    "Gi": 1024**3,
    "GiB": 1024**3,
    "Ti": 1024**4,
    "TiB": 1024**4,
}

_BYTE_SIZE_PATTERN = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[A-Za-z]*)$")


def parse_duration(text: str) -> float:
    """Return the number of seconds in a Prometheus duration such as `15d` or `1h30m`.

    Raises ValueError for anything else, including an empty string and `0s`.
    """
    match = _DURATION_PATTERN.match(text.strip())
    if not text.strip() or match is None:
        raise ValueError(f"invalid duration {text!r}: use a Prometheus duration such as 30s, 5m, 12h or 15d")

    seconds = sum(int(value) * _DURATION_UNITS_SECONDS[unit] for unit, value in match.groupdict().items() if value)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: it must be longer than zero")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds as the shortest Prometheus duration that is exact to the millisecond."""
    milliseconds = round(seconds * 1000)
    parts = []
    for unit in ("d", "h", "m", "s"):
        unit_ms = _DURATION_UNITS_SECONDS[unit] * 1000
        count, milliseconds = divmod(milliseconds, unit_ms)
        if count:
            parts.append(f"{int(count)}{unit}")
    if milliseconds:
        parts.append(f"{int(milliseconds)}ms")
    return "".join(parts) or "0s"


def parse_byte_size(text: str) -> int:
    """Return the number of bytes in a size such as `50Gi`, `40GB` or `512MiB`.

    Raises ValueError for an unknown unit, a negative or zero size, or text that is not a size.
    """
    match = _BYTE_SIZE_PATTERN.match(str(text).strip())
    if match is None or match.group("unit") not in _BYTE_UNITS:
        raise ValueError(
            f"invalid byte size {text!r}: use a number with a unit such as 512Mi, 20Gi or 40GB "
            f"(units: {', '.join(unit for unit in _BYTE_UNITS if unit)})"
        )

    size = int(float(match.group("number")) * _BYTE_UNITS[match.group("unit")])
    if size <= 0:
        raise ValueError(f"invalid byte size {text!r}: it must be larger than zero")
    return size


def format_prometheus_size(size_bytes: int) -> str:
    """Format bytes for `--storage.tsdb.retention.size`, whose `MB` and `GB` are binary units."""
    # Rounding down could turn a small size into 0MB, which Prometheus reads as "no size limit".
    if size_bytes % 1024**2:
        return f"{size_bytes}B"
    return f"{size_bytes // 1024**2}MB"


def format_kubernetes_quantity(size_bytes: int) -> str:
    """Format bytes as a Kubernetes quantity, in the largest binary unit that divides it."""
    for suffix, factor in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if size_bytes % factor == 0:
            return f"{size_bytes // factor}{suffix}"
    return str(size_bytes)


def format_go_duration(seconds: float) -> str:
    """Format seconds for Go's `time.ParseDuration`, which has no day or week unit (`336h`, `90m`, `1500ms`)."""
    milliseconds = round(seconds * 1000)
    parts = []
    for unit, unit_ms in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        count, milliseconds = divmod(milliseconds, unit_ms)
        if count:
            parts.append(f"{count}{unit}")
    if milliseconds:
        parts.append(f"{milliseconds}ms")
    return "".join(parts) or "0s"
