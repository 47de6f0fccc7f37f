"""Small SFT and DPO training sets shared by the real-model training tests."""

SFT_ROWS = [
    {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
    for i in range(8)
]
DPO_ROWS = [
    {"prompt": [{"role": "user", "content": f"Ask me a question about the number {i}."}],
     "chosen": f"What is {i} times {i + 7}?", "rejected": "Hello."}
    for i in range(8)
]
