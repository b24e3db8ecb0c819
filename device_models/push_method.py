"""Where a mapper pushes a property's data besides the twin (KubeEdge v1beta1 ``pushMethod``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from device_models.base import KubeModel


class PushMethodHTTP(KubeModel):
    """Push to an HTTP endpoint."""

    host_name: str | None = None
    port: int | None = Field(default=None, ge=0, le=65535)
    request_path: str | None = None
    timeout: int | None = Field(default=None, ge=0)


class PushMethodMQTT(KubeModel):
    """Publish to an MQTT broker."""

    address: str | None = None
    """Broker address, like tcp://127.0.0.1:1883."""
    topic: str | None = None
    qos: int | None = Field(default=None, alias="qos", ge=0, le=2)
    retained: bool | None = None


class PushMethodOTEL(KubeModel):
    """Export to an OpenTelemetry collector."""

    endpoint_url: str | None = Field(default=None, alias="endpointURL")
    """Target endpoint, like https://localhost:4318/v1/metrics."""


class Influxdb2ClientConfig(KubeModel):
    """Connection to InfluxDB 2."""

    url: str | None = None
    org: str | None = None
    bucket: str | None = None


class Influxdb2DataConfig(KubeModel):
    """How a property's data is written to InfluxDB 2."""

    measurement: str | None = None
    tag: dict[str, str] = Field(default_factory=dict)
    field_key: str | None = None


class DBMethodInfluxdb2(KubeModel):
    """Store in InfluxDB 2."""

    influxdb2_client_config: Influxdb2ClientConfig | None = Field(default=None, alias="influxdb2ClientConfig")
    influxdb2_data_config: Influxdb2DataConfig | None = Field(default=None, alias="influxdb2DataConfig")


class RedisClientConfig(KubeModel):
    """Connection to Redis."""

    addr: str | None = None
    db: int | None = None
    poolsize: int | None = None
    min_idle_conns: int | None = None


class DBMethodRedis(KubeModel):
    """Store in Redis."""

    redis_client_config: RedisClientConfig | None = None


class DatabaseAddress(KubeModel):
    """Connection to TDengine or KWDB: address and database name."""

    addr: str | None = None
    db_name: str | None = None


class DBMethodTDEngine(KubeModel):
    """Store in TDengine."""

    tdengine_client_config: DatabaseAddress | None = Field(default=None, alias="TDEngineClientConfig")


class DBMethodKWDB(KubeModel):
    """Store in KWDB (KaiwuDB)."""

    kwdb_client_config: DatabaseAddress | None = Field(default=None, alias="KWDBClientConfig")


class MySQLClientConfig(KubeModel):
    """Connection to MySQL."""

    addr: str | None = None
    """Address, like localhost:3306."""
    database: str | None = None
    user_name: str | None = None


class DBMethodMySQL(KubeModel):
    """Store in MySQL."""

    mysql_client_config: MySQLClientConfig | None = Field(default=None, alias="mysqlClientConfig")


class DBMethodConfig(KubeModel):
    """Store a property's data in a database."""

    influxdb2: DBMethodInfluxdb2 | None = Field(default=None, alias="influxdb2")
    redis: DBMethodRedis | None = None
    tdengine: DBMethodTDEngine | None = Field(default=None, alias="TDEngine")
    mysql: DBMethodMySQL | None = None
    kwdb: DBMethodKWDB | None = Field(default=None, alias="Kwdb")


class PushMethod(KubeModel):
    """The ways a mapper pushes a property's data; the destination must be reachable from the mapper."""

    http: PushMethodHTTP | None = None
    mqtt: PushMethodMQTT | None = None
    otel: PushMethodOTEL | None = None
    db_method: DBMethodConfig | None = None
    anomaly_detection: dict[str, Any] | None = None
    """Free-form settings of KubeEdge's anomaly detection push."""
