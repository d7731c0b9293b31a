"""Word count: counts every word of the sentences on topic ``sentences``.

Run it on the embedded log (no broker; write the input first, since the
embedded log belongs to one process at a time), then stop it with Ctrl-C::

    echo "the quick brown fox" | statestream produce sentences --partitions 4
    statestream worker examples.wordcount:app
    statestream tables examples.wordcount:app

On Kafka, the same app unchanged::

    statestream worker examples.wordcount:app --broker-url kafka://localhost:9092 --partitions 4

Each new count is also sent to topic ``word-counts``. Sentences arrive on
any partition, and tables are sharded by partition: ``SplitWords`` re-keys
every word through the internal topic ``wordcount-words-repartition``
(``ctx.group_by``), so all occurrences of a word reach the same partition of
``CountWords``' table.
"""

from statestream import App, Processor, Table, repartition
from statestream.context import Context, Message


class SplitWords(Processor):
    topics = ["sentences"]

    def process(self, message: Message, ctx: Context) -> None:
        for word in str(message.value).lower().split():
            ctx.group_by("words", word, 1)


class CountWords(Processor):
    topics = [repartition("words")]
    outputs = ["word-counts"]
    counts = Table("counts", default=int)

    def process(self, message: Message, ctx: Context) -> None:
        self.counts[message.key] += message.value
        ctx.send("word-counts", message.key, self.counts[message.key])


app = App("wordcount", processors=[SplitWords, CountWords])
