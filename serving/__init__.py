"""What every edgetwin HTTP server shares: binding an aiohttp application and naming the address it got."""

from serving.address import host_of, join_host_port, split_host_port
from serving.site import start_site

__all__ = ["host_of", "join_host_port", "split_host_port", "start_site"]
