"""Word count: counts every word of the sentences on topic ``sentences``.

Run it (no broker needed; sentences are written by ``examples/produce.py``)::

    statestream worker examples.wordcount:app --partitions 4
    STATESTREAM_BROKER_URL=kafka://localhost:9092 statestream worker examples.wordcount:app

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
