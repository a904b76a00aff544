"""A Xiajiao plugin: convert lengths, masses and temperatures.

Installed with pip, it is found through its entry point in the ``xiajiao`` group (pyproject.toml)."""
from __future__ import annotations

from xiajiao import BadRequest, Setting, Tool, hookimpl

# how many of the base unit (metre, kilogram) one unit is
FACTORS = {
    "length": {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048, "yd": 0.9144,
               "mi": 1609.344, "里": 500.0, "尺": 1 / 3},
    "mass": {"g": 0.001, "kg": 1.0, "t": 1000.0, "oz": 0.028349523125, "lb": 0.45359237, "斤": 0.5},
}
TEMPERATURES = {"C", "F", "K"}


def _to_kelvin(value: float, unit: str) -> float:
    return {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[unit]


def _from_kelvin(value: float, unit: str) -> float:
    return {"C": value - 273.15, "F": (value - 273.15) * 9 / 5 + 32, "K": value}[unit]


def convert(value: float, source: str, target: str) -> float:
    """``value`` in ``source`` units expressed in ``target`` units (a BadRequest for units that do not match)."""
    if source in TEMPERATURES and target in TEMPERATURES:
        return _from_kelvin(_to_kelvin(value, source), target)
    for table in FACTORS.values():
        if source in table and target in table:
            return value * table[source] / table[target]
    known = sorted(TEMPERATURES.union(*FACTORS.values()))
    raise BadRequest(f"cannot convert {source!r} to {target!r}; units: {', '.join(known)}", "unknown_unit")


async def convert_units(args: dict, ctx) -> str:
    digits = ctx.app.settings.units_precision
    result = convert(float(args["value"]), args["from"], args["to"])
    return f"{args['value']:g} {args['from']} = {round(result, digits):g} {args['to']}"


@hookimpl
def register_settings(register):
    register(Setting("units_precision", 4, "Digits after the point in converted values.", type=int))


@hookimpl
def register_tools(register):
    register(Tool(
        name="convert_units",
        description="Convert a value between units of length (mm, cm, m, km, in, ft, yd, mi, 里, 尺), "
                    "mass (g, kg, t, oz, lb, 斤) or temperature (C, F, K).",
        parameters={"type": "object", "properties": {
            "value": {"type": "number"},
            "from": {"type": "string", "description": "the unit of value"},
            "to": {"type": "string", "description": "the unit wanted"}},
            "required": ["value", "from", "to"]},
        fn=convert_units))
