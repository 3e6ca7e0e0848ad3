"""Where a command's logs go: the whole story to a file, the terminal only what a person needs.

Each command or job logs to its own file, ``<home>/logs/<command>-<time>-<pid>.log``: every
Python log line at INFO and above (DEBUG with ``--verbose``), tracebacks, and the JVM's own
log (Spark, Delta, Hadoop; WARN and above) in plain text lines. The terminal gets warnings and
errors, one line each, and the progress lines of a long-running service that asks for them;
``--verbose`` adds the platform's DEBUG lines, tracebacks and the JVM's warnings.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

#: Log files kept per state folder; the oldest beyond this are removed when a command starts.
KEEP_LOG_FILES = 200
#: Third-party loggers held at WARNING (their INFO lines say nothing about the platform's work).
NOISY_LOGGERS = ("py4j", "urllib3", "alembic", "numexpr", "matplotlib", "feast", "filelock")
#: PySpark's own loggers that write JSON to stderr with a handler of their own (an error's query
#: context, logged whenever a Spark exception is created): sent to the log file instead.
PYSPARK_CONTEXT_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")

#: The JVM's logging (log4j 2): a plain-text file appender, and a console appender whose
#: threshold is ``off`` unless the command runs with ``--verbose``.
LOG4J2_PROPERTIES = """\
# Written by lakehouse.platform.logs for each command: the JVM's log goes to the command's file.
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:lakehouse.log.file}
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{HH:mm:ss.SSS} %p [jvm] %c{1}: %m%n%ex
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.filter.threshold.type = ThresholdFilter
appender.console.filter.threshold.level = ${sys:lakehouse.log.console:-off}
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{HH:mm:ss} %p [jvm] %c{1}: %m%n%ex{short}
rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.console.ref = console
logger.jetty.name = org.sparkproject.jetty
logger.jetty.level = warn
logger.parquet.name = org.apache.parquet
logger.parquet.level = error
"""

_HANDLER_MARK = "_lakehouse_handler"
#: A record whose ``extra`` sets this attribute to False stays off the terminal.
TERMINAL_ATTR = "lakehouse_terminal"


class _Terminal(logging.StreamHandler[TextIO]):
    """A handler on whatever ``sys.stderr`` is when a record is written (not when created)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _TerminalFilter(logging.Filter):
    """What reaches the terminal: WARNING and above; INFO of the platform's loggers only when
    ``progress``; DEBUG of them only when ``verbose``. Tracebacks only when ``verbose``."""

    def __init__(self, verbose: bool, progress: bool) -> None:
        super().__init__()
        self.verbose = verbose
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, TERMINAL_ATTR, True):
            return False
        if record.levelno >= logging.WARNING:
            return True
        own = record.name == "lakehouse" or record.name.startswith("lakehouse.")
        if not own:
            return False
        return self.verbose or (self.progress and record.levelno >= logging.INFO)


class _TerminalFormatter(logging.Formatter):
    """One line per record unless verbose: a traceback's frames go to the log file only."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose:
            return super().format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return super().format(record).splitlines()[0]
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


class LogSetup:
    """The log file of the running command, and how its JVM is told about it."""

    def __init__(self, file: Path | None, verbose: bool) -> None:
        self.file = file
        self.verbose = verbose

    def java_options(self) -> str:
        """``-D`` options that route a JVM this process starts into :attr:`file`."""
        if self.file is None:
            return ""
        conf = self.file.parent / ".log4j2.properties"
        if not conf.exists() or conf.read_text() != LOG4J2_PROPERTIES:
            conf.write_text(LOG4J2_PROPERTIES)
        console = "warn" if self.verbose else "off"
        return (
            f"-Dlog4j2.configurationFile={conf.as_uri()} -Dlakehouse.log.file={self.file} "
            f"-Dlakehouse.log.console={console}"
        )

    def route_running_jvm(self, spark: Any) -> None:
        """Reconfigure the logging of a JVM started by someone else (``spark-submit``)."""
        if self.file is None:
            return
        try:
            jvm = spark.sparkContext._jvm
            options = self.java_options().split()
            for option in options:
                key, _, value = option[2:].partition("=")
                jvm.java.lang.System.setProperty(key, value)
            uri = jvm.java.net.URI.create(options[0].partition("=")[2])
            jvm.org.apache.logging.log4j.core.config.Configurator.reconfigure(uri)
            spark.sparkContext.setLogLevel("ERROR")
        except Exception:  # logging is worth no failed job; say so in the file
            log.warning("could not route the JVM's log to %s", self.file, exc_info=True)


_current = LogSetup(None, False)


def current() -> LogSetup:
    """The log set-up of this process (no file until :func:`configure_logging` made one)."""
    return _current


def _log_file(home: Path, command: str) -> Path | None:
    folder = home / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    old = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime)
    for stale in old[: max(0, len(old) - KEEP_LOG_FILES + 1)]:
        stale.unlink(missing_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in command) or "lakehouse"
    return folder / f"{safe}-{stamp}-{os.getpid()}.log"


def configure_logging(
    verbose: bool = False,
    command: str = "lakehouse",
    home: Path | None = None,
    progress: bool = False,
) -> LogSetup:
    """Send this process's logs to a file under ``home/logs`` and a short form to the terminal.

    Args:
        verbose: DEBUG lines of the platform, tracebacks and the JVM's warnings on the terminal.
        command: the command's name, the start of the log file's name.
        home: the state folder; without one there is no log file.
        progress: the platform's INFO lines on the terminal too (a service's progress).

    A process whose root logger already has handlers of someone else's (a test runner, a
    notebook) keeps them: only the log file is added. Calling it again replaces what the
    previous call installed.
    """
    global _current
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
            handler.close()
    foreign = bool(root.handlers)
    file = _log_file(home, command) if home is not None else None
    if file is not None:
        to_file = logging.FileHandler(file, delay=True, encoding="utf-8")
        to_file.setLevel(logging.DEBUG if verbose else logging.INFO)
        to_file.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s")
        )
        setattr(to_file, _HANDLER_MARK, True)
        root.addHandler(to_file)
        _route_pyspark_context_loggers(to_file, verbose)
    if not foreign:
        terminal = _Terminal()
        terminal.addFilter(_TerminalFilter(verbose, progress))
        terminal.setFormatter(_TerminalFormatter(verbose))
        setattr(terminal, _HANDLER_MARK, True)
        root.addHandler(terminal)
        root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("lakehouse").setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    _current = LogSetup(file, verbose)
    return _current


def _route_pyspark_context_loggers(file_handler: logging.Handler, verbose: bool) -> None:
    """PySpark's query-context loggers write to the log file (and the terminal if verbose)."""
    try:
        from pyspark.logger import PySparkLogger
    except ImportError:  # pragma: no cover - pyspark before 4.0
        return
    for name in PYSPARK_CONTEXT_LOGGERS:
        logger = PySparkLogger.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        # logging.Logger.addHandler: PySparkLogger's own would force its JSON formatter.
        logging.Logger.addHandler(logger, file_handler)
        if verbose:
            logging.Logger.addHandler(logger, logging.StreamHandler())
