"""An example filejobs plugin: the most frequent words of a text file, as JSON and as a CSV file."""

from __future__ import annotations

import csv
import re
from collections import Counter

from pydantic import BaseModel, ConfigDict, Field

from filejobs.processors import Context, Output, Processor, ProcessorError

WORD = re.compile("[^\\W\\d_]+(?:['\\u2019][^\\W\\d_]+)*")
CHUNK_LINES = 10_000


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top: int = Field(default=10, ge=1, le=1000, description="How many words to report.")
    min_length: int = Field(default=1, ge=1, le=50, description="Ignore shorter words.")
    case_sensitive: bool = False


class WordFrequency(Processor):
    name = "word-frequency"
    version = "1"
    description = "Counts the words of a text file and reports the most frequent ones (example plugin)."
    accepts = ("text/*",)
    Params = Params

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, Params)
        counts: Counter[str] = Counter()
        size = ctx.input_path.stat().st_size or 1
        with open(ctx.input_path, "rb") as raw:
            text = (line.decode("utf-8", errors="replace") for line in raw)
            for number, line in enumerate(text, 1):
                words = WORD.findall(line if params.case_sensitive else line.lower())
                counts.update(word for word in words if len(word) >= params.min_length)
                if number % CHUNK_LINES == 0:
                    ctx.check_cancelled()
                    ctx.progress(raw.tell() / size, f"{number} lines read")
        if not counts:
            raise ProcessorError("no_words", "The file contains no words.")
        top = counts.most_common(params.top)
        table = ctx.output_dir / "words.csv"
        with open(table, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["word", "count"])
            writer.writerows(top)
        return Output(
            result={"total_words": sum(counts.values()), "distinct_words": len(counts), "top": top},
            file=table,
            file_name=f"{ctx.file_name}.words.csv",
            content_type="text/csv",
        )
