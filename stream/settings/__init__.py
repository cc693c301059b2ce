"""One settings tree, read in one place.

The tree (:class:`Settings`) has a section per concern: ``kafka``, ``store``, ``events``,
``publish``, ``training``, ``worker`` (the pipeline) and ``produce``, ``data``, ``eval``,
``consume``, ``demo`` (the other commands); ``kafka.security`` (TLS, SASL) is the
``kafka`` section's sub-section, shared by every Kafka client. Every option is listed once in
:data:`OPTIONS` with its environment twin; :func:`settings_from_args` is the only code
that reads the environment, and every command takes its settings from it.
"""

from stream.settings.commands import (
    ConsumeSettings,
    DataSettings,
    DemoSettings,
    EvalSettings,
    ProduceSettings,
)
from stream.settings.load import add_options, load_settings, settings_from_args
from stream.settings.options import OPTIONS, Option, select
from stream.settings.secret import Secret
from stream.settings.sections import (
    EventSettings,
    KafkaSettings,
    PublishSettings,
    Settings,
    StoreSettings,
    WorkerSettings,
    changelog_topic,
    of_stream,
)
from stream.settings.security import SecuritySettings
from stream.settings.training import TrainerSettings

__all__ = [
    "OPTIONS",
    "ConsumeSettings",
    "DataSettings",
    "DemoSettings",
    "EvalSettings",
    "EventSettings",
    "KafkaSettings",
    "Option",
    "ProduceSettings",
    "PublishSettings",
    "Secret",
    "SecuritySettings",
    "Settings",
    "StoreSettings",
    "TrainerSettings",
    "WorkerSettings",
    "add_options",
    "changelog_topic",
    "load_settings",
    "of_stream",
    "select",
    "settings_from_args",
]
