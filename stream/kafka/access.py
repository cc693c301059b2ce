"""One login before the clients start: a refused login or certificate is an error, not a retry.

The client libraries treat a failed login like a network fault: librdkafka retries it for
ever (reporting it only to an error callback), kafka-python 3.0 drops the broker's
refusal when the broker closes the TLS connection right after it and waits out its whole
bootstrap timeout, and aiokafka says only "Unable to bootstrap". So every command checks
its access first (:func:`check_access`): one connection to a bootstrap server, the TLS
handshake and the SASL exchange, within a bounded time. A refused login or an unverified
certificate raises :class:`~stream.errors.KafkaAccessError` saying so (never with a
password); a broker that cannot be reached is left to the clients' own retries.

The long-running commands (``worker``, ``ingest``, ``train``) wait for a broker instead
(:func:`wait_for_access`): the clients they build next block in their own bootstrap for
half a minute, deaf to SIGTERM, and then fail with a traceback; the wait answers a
SIGTERM within a second or two and gives up in one line.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
import time
from collections.abc import Callable
from contextlib import suppress

from aiokafka import errors as aiokafka_errors
from confluent_kafka import KafkaError
from kafka import errors as kafka_errors

from stream.errors import BrokersUnreachable, ConfigError, KafkaAccessError
from stream.kafka.clients import aiokafka_connection
from stream.settings import KafkaSettings, SecuritySettings

logger = logging.getLogger(__name__)

_AUTHENTICATION_ERRORS = (
    aiokafka_errors.SaslAuthenticationFailed,
    aiokafka_errors.AuthenticationFailedError,
    aiokafka_errors.IllegalSaslStateError,
)
# A connection the broker accepted and then closed mid-handshake: a listener of another
# protocol, or a client certificate it requires or refuses; tried again before it counts,
# so a connection lost by accident does not stop a command.
_CLOSED_TRIES = 3
_CLOSED_PAUSE_S = 1.0
# wait_for_access: pauses between rounds grow to the cap; an attempt gets the access
# check's own time (a TLS login far away is slow), abandoned at once on a stop.
_WAIT_PAUSE_S = (0.25, 0.5, 1.0, 2.0)
_WAIT_TRY_S = 15.0
_STOP_CHECK_S = 0.1
START_WAIT_S = 30.0
"""How long :func:`wait_for_access` waits by default: about what the clients' own
bootstrap waited before, so an orchestrator's restarts come no faster than they did."""


# librdkafka's refusals of an operation the principal holds no ACL for: the clients report
# them as errors and go on (a consumer fetches nothing, a producer retries), so a worker
# without a right would stall for ever; they end the command instead.
NOT_AUTHORIZED = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    }
)


# kafka-python's errors for the same refusals (it raises or returns them per request)
NOT_AUTHORIZED_ERRORS = (
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.ClusterAuthorizationFailedError,
)


def not_authorized(
    error: object, kafka: KafkaSettings, what: str, groups: bool = True
) -> KafkaAccessError | None:
    """A :class:`KafkaAccessError` saying who may not do ``what`` when ``error`` (a
    librdkafka ``KafkaError``) is an authorization refusal; None for any other error.
    ``groups=False`` for a consumer that only assigns: librdkafka still looks up its
    group's coordinator, and a refusal there costs it nothing."""
    code = getattr(error, "code", None)
    if code is None or code() not in NOT_AUTHORIZED:
        return None
    if not groups and code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return None
    return refusal(kafka, what, getattr(error, "str", lambda: str(error))())


def refusal(kafka: KafkaSettings, what: str, reason: str) -> KafkaAccessError:
    """The error that ends a command whose principal may not do ``what`` (``reason``: what
    the client said, in any library's words)."""
    user = kafka.security.sasl_username
    who = f"user {user!r}" if user else "this client's principal"
    return KafkaAccessError(
        f"{who} is not authorized to {what} ({reason}): grant the ACLs "
        'docs/security.md lists under "Access control"'
    )


class _Closed(Exception):
    """The broker accepted the TCP connection and closed it during the handshake."""


async def check_access(kafka: KafkaSettings, timeout_s: float = 15.0) -> None:
    """Connect and log in to the first bootstrap server that answers.

    Raises :class:`KafkaAccessError` when a broker refused the login or the TLS
    handshake. Returns once one accepted, or when none could be reached (refused, timed
    out: the clients keep trying, as for any broker outage). With ``PLAINTEXT`` there is
    nothing to check and nothing is connected.
    """
    if kafka.security.security_protocol == "PLAINTEXT":
        return
    for host, port in _addresses(kafka.bootstrap_servers):
        if await _try_server(kafka, host, port, timeout_s):
            return


async def wait_for_access(
    kafka: KafkaSettings, stopping: Callable[[], bool], wait_s: float | None = None
) -> bool:
    """:func:`check_access`, waiting for a bootstrap server to answer (any protocol).

    True once one accepted the connection (and login); False as soon as ``stopping()``
    turns true (a SIGTERM while the brokers are away); raises :class:`BrokersUnreachable`
    when none answered within ``wait_s`` (:data:`START_WAIT_S` when ``None``) and
    :class:`KafkaAccessError` when one refused.
    """
    wait_s = START_WAIT_S if wait_s is None else wait_s
    addresses = _addresses(kafka.bootstrap_servers)
    deadline = time.monotonic() + wait_s
    for attempt in itertools.count():
        for host, port in addresses:
            answered = await _try_unless_stopped(kafka, host, port, stopping)
            if answered is None:
                return False
            if answered:
                return True
        left = deadline - time.monotonic()
        if left <= 0:
            break
        pause = min(_WAIT_PAUSE_S[min(attempt, len(_WAIT_PAUSE_S) - 1)], left)
        if attempt == 0:
            logger.warning(
                "no Kafka broker answers at %s yet; waiting up to %.0f s",
                kafka.bootstrap_servers,
                wait_s,
            )
        for _ in range(max(1, int(pause / _STOP_CHECK_S))):
            if stopping():
                return False
            await asyncio.sleep(_STOP_CHECK_S)
    raise BrokersUnreachable(
        f"no Kafka broker answered at {kafka.bootstrap_servers} within {wait_s:.0f} s "
        "(is the address right, and the broker up?)"
    )


async def _try_unless_stopped(
    kafka: KafkaSettings, host: str, port: int, stopping: Callable[[], bool]
) -> bool | None:
    """:func:`_try_server`, abandoned (None) as soon as ``stopping()`` turns true."""
    attempt = asyncio.ensure_future(_try_server(kafka, host, port, _WAIT_TRY_S))
    while not attempt.done():
        if stopping():
            attempt.cancel()
            with suppress(asyncio.CancelledError):
                await attempt
            return None
        await asyncio.wait({attempt}, timeout=_STOP_CHECK_S)
    return attempt.result()


def check_access_blocking(kafka: KafkaSettings, timeout_s: float = 15.0) -> None:
    """:func:`check_access` for synchronous callers (outside any running event loop)."""
    asyncio.run(check_access(kafka, timeout_s))


async def _try_server(kafka: KafkaSettings, host: str, port: int, timeout_s: float) -> bool:
    """True once logged in; False when unreachable; raises when access is refused."""
    for attempt in range(1, _CLOSED_TRIES + 1):
        try:
            await _log_in(kafka, host, port, timeout_s)
            return True
        except _Closed as exc:
            if attempt == _CLOSED_TRIES:
                raise KafkaAccessError(_closed_message(f"{host}:{port}", kafka.security)) from None
            logger.info("access check: %s:%s closed the connection (%s)", host, port, exc)
            await asyncio.sleep(_CLOSED_PAUSE_S)
        except (TimeoutError, OSError) as exc:
            logger.info("access check: %s:%s not reachable (%r)", host, port, exc)
            return False
    return False


async def _log_in(kafka: KafkaSettings, host: str, port: int, timeout_s: float) -> None:
    where, security = f"{host}:{port}", kafka.security
    timeout_ms = max(int(timeout_s * 1000), 100)
    try:
        connection = await asyncio.wait_for(
            aiokafka_connection(
                kafka, host, port, client_id="streamgnn-access-check", request_timeout_ms=timeout_ms
            ),
            timeout_s,
        )
    except _AUTHENTICATION_ERRORS as exc:
        raise KafkaAccessError(
            f"Kafka authentication failed at {where} ({security.describe()}): "
            f"{_broker_message(exc)}; check the SASL username and password"
        ) from None
    except aiokafka_errors.UnsupportedSaslMechanismError as exc:
        detail = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
        raise KafkaAccessError(
            f"Kafka authentication failed at {where}: the broker does not accept SASL "
            f"mechanism {security.sasl_mechanism} {detail}".rstrip()
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise KafkaAccessError(
            f"TLS to {where} failed: the broker's certificate was not verified "
            f"({exc.verify_message}); check the CA file"
        ) from None
    except ssl.SSLError as exc:
        raise KafkaAccessError(f"TLS to {where} failed: {exc.reason or exc}") from None
    except (ConnectionResetError, BrokenPipeError, asyncio.IncompleteReadError) as exc:
        raise _Closed(repr(exc)) from None
    except aiokafka_errors.KafkaConnectionError as exc:
        if "closed" in str(exc).lower():
            raise _Closed(str(exc)) from None
        raise OSError(str(exc)) from None
    connection.close()


def _closed_message(where: str, security: SecuritySettings) -> str:
    protocol = security.security_protocol
    text = (
        f"{where} accepted the connection but closed it during the {protocol} "
        f"handshake ({_CLOSED_TRIES} tries): is it a {protocol} listener?"
    )
    if security.uses_tls:
        text += (
            " Does it require a client certificate (mTLS)? Set the client certificate and key files"
            if security.ssl_certfile is None
            else " Does it refuse this client certificate?"
        )
    return text


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    addresses = []
    for entry in bootstrap_servers.split(","):
        text = entry.strip()
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"bootstrap server {text!r} is not host:port")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _broker_message(exc: BaseException) -> str:
    # aiokafka puts the broker's own error message in the exception's arguments.
    with suppress(IndexError, TypeError):
        message = exc.args[0]
        if isinstance(message, str) and message:
            return message
    return type(exc).__name__
