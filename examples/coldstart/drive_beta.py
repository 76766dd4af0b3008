"""Beta users, simulated: send every message of beta_traffic.jsonl to a served student through the
`openai` SDK, the way a product's backend would (chat completions, some streamed, 8 at a time).

    python examples/coldstart/drive_beta.py --base-url http://127.0.0.1:8000/v1 --model lumen-support-beta

The API key comes from DISTILL_SERVE_API_KEY. Every 10th user opted out of capture (header
`X-Distill-Capture: off`); their messages must not reach the capture file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

import openai

TRAFFIC = Path(__file__).with_name("beta_traffic.jsonl")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", required=True)
    args = parser.parse_args()
    client = openai.AsyncOpenAI(base_url=args.base_url, api_key=os.environ["DISTILL_SERVE_API_KEY"], max_retries=0)
    lines = [json.loads(line) for line in TRAFFIC.read_text().splitlines() if line.strip()]
    gate = asyncio.Semaphore(8)
    opted_out = []

    async def send(index: int, line: dict) -> None:
        content = f"Channel: {line['channel']}\nCustomer: {line['message']}"
        headers = {"X-Distill-Capture": "off"} if index % 10 == 9 else {}
        if headers:
            opted_out.append(line["message"])
        async with gate:
            if index % 2:
                stream = await client.chat.completions.create(
                    model=args.model, messages=[{"role": "user", "content": content}], max_tokens=48,
                    temperature=0.7, seed=index, stream=True, extra_headers=headers)
                async for _ in stream:
                    pass
            else:
                await client.chat.completions.create(model=args.model, messages=[{"role": "user", "content": content}],
                                                     max_tokens=48, temperature=0.7, seed=index, extra_headers=headers)

    await asyncio.gather(*[send(i, line) for i, line in enumerate(lines)])
    print(f"sent {len(lines)} requests ({len(opted_out)} opted out of capture)")
    Path(os.environ.get("OPTED_OUT_FILE", "/dev/null")).write_text("\n".join(opted_out))


if __name__ == "__main__":
    asyncio.run(main())
