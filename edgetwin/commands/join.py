"""``edgetwin join``: make this machine an edge node of a cluster, as KubeEdge's ``keadm join``.

With a token of ``edgetwin gettoken``: pin cloudcore's CA by the token's hash, get the node certificate,
write ``ca/rootCA.crt``, ``certs/server.crt``, ``certs/server.key`` (0600) and a complete
``config/edgecore.yaml`` under ``--kubeedge-dir``, and say how to start edgecore (optionally as a systemd
service). The token itself is not stored: the certificate replaces it, and edgecore renews it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from edgetwin.runtime import run

if TYPE_CHECKING:
    from edgecore import EdgeCoreConfig

__all__ = ["EDGE_TAINT", "join"]

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EDGE_TAINT = {"key": "node-role.kubernetes.io/edge", "value": "", "effect": "NoSchedule"}
DEFAULT_KUBEEDGE_DIR = Path("/etc/kubeedge")
DEFAULT_SYSTEMD_DIR = Path("/etc/systemd/system")
UNIT_NAME = "edgecore.service"

TUNNEL_PORT = 10004  # cloudcore's modules.cloudStream.tunnelPort (KubeEdge's default)


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{item!r}: expected key=value[,key2=value2]", param_hint="--labels")
        labels[key] = value
    return labels


def _edgecore_config(
    *,
    ipport: str,
    http_server: str,
    node: str,
    labels: dict[str, str],
    edge_taint: bool,
    kubeedge_dir: Path,
    database: Path | None,
) -> EdgeCoreConfig:
    """edgecore.yaml for this node; validation errors name the field (e.g. the node name's)."""
    from edgecore import parse_config

    tls = {
        "tlsCaFile": str(kubeedge_dir / "ca" / "rootCA.crt"),
        "tlsCertFile": str(kubeedge_dir / "certs" / "server.crt"),
        "tlsPrivateKeyFile": str(kubeedge_dir / "certs" / "server.key"),
    }
    data: dict[str, Any] = {
        "modules": {
            "edged": {
                "hostnameOverride": node,
                "nodeLabels": labels,
                "tailoredKubeletConfig": {"registerWithTaints": [EDGE_TAINT] if edge_taint else []},
            },
            "edgeHub": {
                "enable": True,
                "httpServer": http_server,
                "websocket": {"enable": True, "server": ipport},
                **tls,
            },
            "eventBus": {
                "eventBusTLS": {
                    "tlsMqttCAFile": tls["tlsCaFile"],
                    "tlsMqttCertFile": tls["tlsCertFile"],
                    "tlsMqttPrivateKeyFile": tls["tlsPrivateKeyFile"],
                }
            },
            "metaManager": {"metaServer": tls},
            # Ready for `kubectl logs` / `exec`: set enable to true when cloudcore runs modules.cloudStream.
            "edgeStream": {
                "enable": False,
                "server": f"{ipport.rpartition(':')[0]}:{TUNNEL_PORT}",
                "tlsTunnelCAFile": tls["tlsCaFile"],
                "tlsTunnelCertFile": tls["tlsCertFile"],
                "tlsTunnelPrivateKeyFile": tls["tlsPrivateKeyFile"],
            },
        }
    }
    if database is not None:
        data["database"] = {"dataSource": str(database)}
    return parse_config(data, "edgetwin join")


def _edgetwin_executable() -> str:
    """The ``edgetwin`` script of this installation, for the unit's ExecStart."""
    beside_python = Path(sys.executable).with_name("edgetwin")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("edgetwin") or "edgetwin"


def _unit_file(config_file: Path) -> str:
    return f"""\
[Unit]
Description=edgetwin edgecore: KubeEdge-compatible edge node
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
ExecStart={_edgetwin_executable()} edgecore --config {config_file}
Restart=always
RestartSec=10

[Install]
WantedBy=multi-user.target
"""


def join(
    cloudcore_ipport: Annotated[
        str,
        typer.Option(
            "--cloudcore-ipport", help="cloudcore's websocket address, HOST:10000.", show_default=False
        ),
    ],
    token: Annotated[
        str, typer.Option("--token", "-t", help="A token from `edgetwin gettoken`.", show_default=False)
    ],
    edgenode_name: Annotated[
        str,
        typer.Option("--edgenode-name", "-i", help="This node's name in the cluster.", show_default=False),
    ],
    with_edge_taint: Annotated[
        bool,
        typer.Option(
            "--with-edge-taint", help="Register with the node-role.kubernetes.io/edge:NoSchedule taint."
        ),
    ] = False,
    labels: Annotated[str, typer.Option("--labels", "-l", help="Node labels: key=value,key2=value2.")] = "",
    certport: Annotated[int, typer.Option("--certport", help="cloudcore's certificate port.")] = 10002,
    kubeedge_dir: Annotated[
        Path, typer.Option("--kubeedge-dir", help="Where certificates and config/edgecore.yaml go.")
    ] = DEFAULT_KUBEEDGE_DIR,
    database: Annotated[
        Path | None,
        typer.Option("--database", help="The edge's SQLite file (default /var/lib/kubeedge/edgecore.db)."),
    ] = None,
    install_service: Annotated[
        bool, typer.Option("--install-service", help=f"Also write the systemd unit {UNIT_NAME}.")
    ] = False,
    systemd_dir: Annotated[Path, typer.Option("--systemd-dir", hidden=True)] = DEFAULT_SYSTEMD_DIR,
) -> None:
    """Join this machine to a cluster as an edge node (as KubeEdge's `keadm join`).

    Pins cloudcore's CA by the token's hash, gets this node's certificate, writes the certificates
    and a complete config/edgecore.yaml under --kubeedge-dir, and prints how to start edgecore.

    Example: edgetwin join --cloudcore-ipport 192.168.1.10:10000 --token $TOKEN --edgenode-name edge-1
    """
    from cloudsync import cert_server_url, write_credentials
    from cloudsync import join as join_cluster
    from device_models import EdgetwinError
    from edgecore import EdgeCoreConfigError, dump_config
    from serving import host_of

    kubeedge_dir = kubeedge_dir.absolute()
    host = host_of(cloudcore_ipport)
    http_server = cert_server_url(host, certport)
    try:
        config = _edgecore_config(
            ipport=cloudcore_ipport,
            http_server=http_server,
            node=edgenode_name,
            labels=_parse_labels(labels),
            edge_taint=with_edge_taint,
            kubeedge_dir=kubeedge_dir,
            database=database,
        )
    except EdgeCoreConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from exc

    hub = config.modules.edge_hub
    typer.echo(f"[1/3] joining {http_server} as node {edgenode_name}")
    try:
        credentials = run(
            join_cluster(
                host,
                token,
                edgenode_name,
                cert_port=certport,
                progress=lambda line: typer.echo(f"      {line}"),
            )
        )
        write_credentials(
            Path(hub.tls_cert_file),
            Path(hub.tls_private_key_file),
            credentials.cert_pem,
            credentials.key_pem,
            ca_file=Path(hub.tls_ca_file),
            ca_pem=credentials.ca_pem,
        )
    except EdgetwinError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    except OSError as exc:
        typer.echo(f"error: cannot write the certificates under {kubeedge_dir}: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    typer.echo(f"[2/3] wrote {hub.tls_ca_file}, {hub.tls_cert_file}, {hub.tls_private_key_file} (0600)")

    config_file = kubeedge_dir / "config" / "edgecore.yaml"
    try:
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(dump_config(config), encoding="utf-8")
        if install_service:
            systemd_dir.mkdir(parents=True, exist_ok=True)
            (systemd_dir / UNIT_NAME).write_text(_unit_file(config_file), encoding="utf-8")
    except OSError as exc:
        typer.echo(f"error: cannot write {exc.filename}: {exc.strerror or exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    typer.echo(f"[3/3] wrote {config_file}")
    if install_service:
        typer.echo(f"wrote {systemd_dir / UNIT_NAME}; start edgecore now and at every boot with:")
        typer.echo(
            f"  systemctl daemon-reload && systemctl enable --now {UNIT_NAME.removesuffix('.service')}"
        )
    else:
        typer.echo("start edgecore with:")
        typer.echo(f"  {_edgetwin_executable()} edgecore --config {config_file}")
