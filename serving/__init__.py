"""What every edgetwin HTTP server shares: binding an aiohttp application and naming the address it got."""

from serving.site import join_host_port, start_site

__all__ = ["join_host_port", "start_site"]
