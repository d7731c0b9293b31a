"""Word count: counts every word of the sentences on topic ``sentences``.

Run it on the embedded log (no broker; write the input first, since the
embedded log belongs to one process at a time), then stop it with Ctrl-C::

    echo "the quick brown fox" | statestream produce sentences --partitions 4
    statestream worker examples.wordcount:app
    statestream tables examples.wordcount:app

On Kafka, the same app unchanged::

    statestream worker examples.wordcount:app --broker-url kafka://localhost:9092 --partitions 4

Each new count is also sent to topic ``word-counts``.
"""

from statestream import App, Processor, Table
from statestream.context import Context, Message


class WordCount(Processor):
    topics = ["sentences"]
    outputs = ["word-counts"]
    counts = Table("counts", default=int)

    def process(self, message: Message, ctx: Context) -> None:
        for word in str(message.value).lower().split():
            self.counts[word] += 1
            ctx.send("word-counts", word, self.counts[word])


app = App("wordcount", processors=[WordCount])
