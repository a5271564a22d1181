"""The hooks a worker runs besides the history: the forecast, then the alerts (rule 3 reads the
forecast of the same batch), wired to each other. One place, for the worker and the benchmarks."""

from __future__ import annotations

from agents.alerting import AlertingHook
from agents.forecast import ForecastHook
from cashpos.metrics import ProcessorMetrics
from cashpos.settings import Settings


def derived_hooks(settings: Settings, metrics: ProcessorMetrics) -> tuple[ForecastHook, AlertingHook]:
    forecast = ForecastHook(settings, metrics)
    alerting = AlertingHook(settings, metrics)  # alerts, in the ledger's atomic batch
    alerting.book.forecast_of = forecast.account_forecast
    forecast.floor_of = alerting.floor_of
    return forecast, alerting
