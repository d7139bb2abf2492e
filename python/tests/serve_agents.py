"""What `python -m switchboard serve --agents serve_agents:register` registers."""

from agents import Calc, Tally


async def register(runtime) -> None:
    await Calc.register(runtime, "calc", Calc)
    await Tally.register(runtime, "tally", Tally)
