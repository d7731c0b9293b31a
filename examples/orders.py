"""Orders enriched with customer data: a stream joined with a table keyed differently.

Topic ``customers`` is keyed by customer id (value: the customer, e.g.
``{"name": "Ada"}``); topic ``orders`` is keyed by order id (value:
``{"customer": "c1", "amount": 12.5}``). The customers live in a table, which
is sharded by partition, so an order can only be looked up on the partition
its *customer* hashes to: ``ReKeyOrders`` re-keys every order by customer id
(``ctx.group_by``), and ``Enrich`` reads both streams on the same partitions.
An order whose customer is not known yet waits in a table until the customer
arrives. Every enriched order goes to ``enriched-orders``, keyed by order id.

Run it on the embedded log (JSON lines with key and value)::

    echo '{"key": "c1", "value": {"name": "Ada"}}' \
        | statestream produce customers --json --partitions 4
    echo '{"key": "o1", "value": {"customer": "c1", "amount": 12.5}}' \
        | statestream produce orders --json --partitions 4
    statestream worker examples.orders:app
    statestream consume enriched-orders
"""

from __future__ import annotations

from typing import Any

from statestream import App, Processor, Table, repartition
from statestream.context import Context, Message


class ReKeyOrders(Processor):
    topics = ["orders"]

    def process(self, message: Message, ctx: Context) -> None:
        order = dict(message.value, id=message.key)
        ctx.group_by("orders-by-customer", order["customer"], order)


class Enrich(Processor):
    topics = ["customers", repartition("orders-by-customer")]
    outputs = ["enriched-orders"]
    customers: Table[str, dict[str, Any]] = Table("customers")
    waiting: Table[str, list[dict[str, Any]]] = Table("orders-waiting", default=list)

    def process(self, message: Message, ctx: Context) -> None:
        if message.topic == "customers":
            self.customers[message.key] = message.value
            waiting = self.waiting.get(message.key)
            if waiting:
                del self.waiting[message.key]
                for order in waiting:
                    self.send(ctx, order, message.value)
        elif (customer := self.customers.get(message.key)) is not None:
            self.send(ctx, message.value, customer)
        else:
            self.waiting[message.key].append(message.value)

    def send(self, ctx: Context, order: dict[str, Any], customer: dict[str, Any]) -> None:
        ctx.send("enriched-orders", order["id"], {**order, "customer_data": customer})


app = App("orders", processors=[ReKeyOrders, Enrich])
