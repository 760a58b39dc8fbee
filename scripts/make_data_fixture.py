"""Reference outputs for test/data.test.ts from independent implementations: Python's csv module (RFC 4180 parsing),
jinja2 with transformers' apply_chat_template settings (trim_blocks, lstrip_blocks), and a Python port of the shuffle PRNG.
Run: python3 scripts/make_data_fixture.py (any Python 3 with jinja2 >= 3, as transformers needs); writes
test/fixtures/data/reference.json. Python's csv yields [] for a blank line; we skip blank lines as pandas and HF datasets do."""
import csv, hashlib, io, json, os

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, '..', 'shared')

CSV_CASES = [
    'a,b,c\r\n1,2,3\r\n',
    'a,b\n"x, y","he said ""hi"""\n',
    'q,a\n"line1\nline2",z\n',
    'q,a\r\n"multi\r\nline",\r\n,\r\n',
    'a,b\n1,2',
    '\ufeffa,b\n"",""\n',
    'a,b\n\n1,2\n\n',
    'x\n"a""b"\n',
    'a,b,c\n1,,3\n',
]

def csv_rows(text):
    return [row for row in csv.reader(io.StringIO(text.lstrip('\ufeff'), newline=''), strict=True)]

def chatbot():
    path = os.path.join(SHARED, 'datasets', 'ChatbotData.csv')
    with open(path, encoding='utf-8', newline='') as f:
        rows = list(csv.reader(f, strict=True))
    h = hashlib.sha256()
    for r in rows[1:]:
        h.update(('\x1f'.join(r) + '\x1e').encode('utf-8'))
    return {'header': rows[0], 'rows': len(rows) - 1, 'sha256': h.hexdigest(), 'first': rows[1], 'last': rows[-1]}

def render(template, messages, add_generation_prompt=False):
    # transformers.utils.chat_template_utils._compile_jinja_template
    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals['raise_exception'] = raise_exception
    return env.from_string(template).render(messages=messages, bos_token='<s>', eos_token='</s>', add_generation_prompt=add_generation_prompt)

ZEPHYR = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"

CHATS = [
    [{'role': 'user', 'content': '12시 땡!'}, {'role': 'assistant', 'content': '하루가 또 가네요.'}],
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'},
     {'role': 'user', 'content': 'How are you?'}, {'role': 'assistant', 'content': 'Fine.'}],
]

# --- shuffle PRNG: SplitMix32 seeding + xoshiro128** + Fisher-Yates with rejection sampling (a port of src/data/rng.ts)
M = 0xFFFFFFFF
def imul(a, b): return (a * b) & M
def rotl(x, k): return ((x << k) | (x >> (32 - k))) & M

class Rng:
    def __init__(self, seed, stream=0):
        x = (seed & M) ^ imul((seed >> 32) & M if seed >= 0 else ((seed // 2**32) & M), 0x9e3779b9) ^ imul(stream & M, 0x85ebca6b) ^ imul((stream // 2**32) & M, 0xc2b2ae35)
        self.s = []
        for _ in range(4):
            x = (x + 0x9e3779b9) & M
            z = x
            z = imul(z ^ (z >> 16), 0x85ebca6b)
            z = imul(z ^ (z >> 13), 0xc2b2ae35)
            self.s.append((z ^ (z >> 16)) & M)
    def next(self):
        s = self.s
        result = imul(rotl(imul(s[1], 5), 7), 9)
        t = (s[1] << 9) & M
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 11)
        return result
    def below(self, n):
        limit = 2**32 - (2**32 % n)
        while True:
            r = self.next()
            if r < limit:
                return r % n

def permutation(n, seed, stream):
    p = list(range(n)); r = Rng(seed, stream)
    for i in range(n - 1, 0, -1):
        j = r.below(i + 1); p[i], p[j] = p[j], p[i]
    return p

def main():
    default_template = json.load(open(os.path.join(ROOT, 'test', 'fixtures', 'data', 'default_chat_template.json')))['template']
    out = {
        'csv': [{'text': t, 'rows': csv_rows(t)} for t in CSV_CASES],
        'chatbot': chatbot(),
        'templates': [
            {'name': name, 'template': tpl, 'messages': m, 'add_generation_prompt': g, 'expected': render(tpl, m, g)}
            for name, tpl in [('default', default_template), ('zephyr', ZEPHYR)] for m in CHATS for g in ([False, True] if name == 'zephyr' else [False])
        ],
        'permutations': [{'n': n, 'seed': s, 'stream': st, 'expected': permutation(n, s, st)} for n, s, st in [(10, 0, 0), (17, 42, 1), (50, 123456789012, 3), (8, -5, 2)]],
    }
    with open(os.path.join(ROOT, 'test', 'fixtures', 'data', 'reference.json'), 'w', encoding='utf-8') as f:
        json.dump(out, f, ensure_ascii=False, indent=1)

if __name__ == '__main__':
    main()
