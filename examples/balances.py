"""Running balance per account from a stream of transactions.

Records on topic ``transactions`` are keyed by account and carry
``{"amount": 12.5}``. A transaction that would take a balance below zero is
rejected by raising, and the ``dead_letter`` error policy sends it to
``balances-dead-letters`` with the reason in its headers.

    statestream worker examples.balances:app --partitions 4
"""

from statestream import App, Processor, Table
from statestream.context import Context, Message


class InsufficientFundsError(Exception):
    """The transaction would overdraw the account."""


class Balances(Processor):
    topics = ["transactions"]
    balances = Table("balances", default=float)
    error_policy = "dead_letter"

    def process(self, message: Message, ctx: Context) -> None:
        amount = float(message.value["amount"])
        balance = self.balances[message.key] + amount
        if balance < 0:
            raise InsufficientFundsError(f"{message.key} would go to {balance:.2f}")
        self.balances[message.key] = balance


app = App("balances", processors=[Balances])
