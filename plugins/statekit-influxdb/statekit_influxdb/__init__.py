"""statekit-influxdb: every version of statekit's keys as InfluxDB points.

Install ``statekit-influxdb`` and open a store with
``await statekit.open("influxdb://localhost:8086/statekit?namespace=desk1")``, or use
it as the history mirror of a tiered store. See docs/backends/influxdb.md.
"""

from statekit_influxdb.backend import InfluxBackend
from statekit_influxdb.client import InfluxClient
from statekit_influxdb.options import InfluxOptions, parse_url

__all__ = ["InfluxBackend", "InfluxClient", "InfluxOptions", "parse_url"]

__version__ = "0.1.0"
