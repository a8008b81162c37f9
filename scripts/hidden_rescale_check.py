#!/usr/bin/env python3
"""Hidden-channel removal on the SmolLM2 specialist, one-shot and without tuning, in plain numpy:
which norm-gain rescale keeps the held-out loss lowest when the lowest-scoring residual channels
(ptl's score: E|h/rms(h)|·|g| over the norms reading each state) are cut from every weight.
Compares ptl's rho (kept share of the summed h^2 over tokens), the per-token mean of that share,
and no rescale. A diagnostic run by hand (numpy only, single thread; ~6 min per channel count):
    scripts/hidden_rescale_check.py [CAL_LINES] [HELD_LINES] [K ...]
Reads cache/smollm2-arith/{model,data} and tokenizes with .build/release/ptl tokenize.
"""
import json, struct, subprocess, sys, numpy as np
ROOT = __file__.rsplit('/scripts/', 1)[0]
MODEL = ROOT + '/cache/smollm2-arith/model'
def tokenize(path, n):
    out = []
    for line in open(path).readlines()[:n]:
        d = json.loads(line); t = 'Question: ' + d['question'] + '\nAnswer: ' + d['answer']
        r = subprocess.run([ROOT + '/.build/release/ptl', 'tokenize', '--model', MODEL, '--text', t, '--json'],
                           capture_output=True, text=True, check=True)
        out.append(json.loads(r.stdout)['ids'] + [2])   # the line ends with SmolLM2's EOS, as in training
    return out
ncal = int(sys.argv[1]) if len(sys.argv) > 1 else 32
nheld = int(sys.argv[2]) if len(sys.argv) > 2 else 32
KS = [int(k) for k in sys.argv[3:]] or [32, 64]
def load(p):
    b=open(p,'rb').read(); n=struct.unpack('<Q',b[:8])[0]; h=json.loads(b[8:8+n]); o=8+n; W={}
    for k,v in h.items():
        if k=='__metadata__': continue
        s,e=v['data_offsets']; W[k]=np.frombuffer(b[o+s:o+e],dtype=np.float32).reshape(v['shape'])
    return W
W=load(MODEL+'/model.safetensors'); C=json.load(open(MODEL+'/config.json'))
L=C['num_hidden_layers']; H=C['hidden_size']; nh=C['num_attention_heads']; kvh=C['num_key_value_heads']
hd=C.get('head_dim', H//nh); eps=C['rms_norm_eps']; theta=C.get('rope_theta', 10000.0)
assert C.get('tie_word_embeddings'), 'this check reads the tied embedding as the LM head'
cal=tokenize(ROOT+'/cache/smollm2-arith/data/train.jsonl',ncal); held=tokenize(ROOT+'/cache/smollm2-arith/data/test.jsonl',nheld)
def rms(x,g): return x/np.sqrt((x*x).mean(-1,keepdims=True)+eps)*g
def rope(x,T):
    inv=1.0/theta**(np.arange(0,hd,2)/hd); f=np.outer(np.arange(T),inv); c=np.cos(np.concatenate([f,f],-1)); s=np.sin(np.concatenate([f,f],-1))
    x1,x2=x[...,:hd//2],x[...,hd//2:]; return x*c+np.concatenate([-x2,x1],-1)*s
def fwd(W,ids,gf=None,collect=None):
    T=len(ids); x=W['model.embed_tokens.weight'][ids].astype(np.float64)
    for l in range(L):
        p=f'model.layers.{l}.'
        if collect is not None: collect[(l,0)].append(x.copy())
        g1=W[p+'input_layernorm.weight']*(gf[l] if gf else 1)
        a=rms(x,g1); q=(a@W[p+'self_attn.q_proj.weight'].T).reshape(T,nh,hd).transpose(1,0,2)
        k=(a@W[p+'self_attn.k_proj.weight'].T).reshape(T,kvh,hd).transpose(1,0,2); v=(a@W[p+'self_attn.v_proj.weight'].T).reshape(T,kvh,hd).transpose(1,0,2)
        q=rope(q,T); k=rope(k,T); k=np.repeat(k,nh//kvh,0); v=np.repeat(v,nh//kvh,0)
        s=q@k.transpose(0,2,1)/np.sqrt(hd); s+=np.triu(np.full((T,T),-1e30),1); s=np.exp(s-s.max(-1,keepdims=True)); s/=s.sum(-1,keepdims=True)
        o=(s@v).transpose(1,0,2).reshape(T,nh*hd); x=x+o@W[p+'self_attn.o_proj.weight'].T
        if collect is not None: collect[(l,1)].append(x.copy())
        g2=W[p+'post_attention_layernorm.weight']*(gf[l] if gf else 1)
        a=rms(x,g2); gg=a@W[p+'mlp.gate_proj.weight'].T; u=a@W[p+'mlp.up_proj.weight'].T
        x=x+((gg/(1+np.exp(-gg)))*u)@W[p+'mlp.down_proj.weight'].T
    if collect is not None: collect[(L,0)].append(x.copy())
    a=rms(x,W['model.norm.weight']*(gf[L] if gf else 1)); lg=a@W['model.embed_tokens.weight'].T
    lg-=lg.max(-1,keepdims=True); lp=lg-np.log(np.exp(lg).sum(-1,keepdims=True))
    return -lp[np.arange(T-1),ids[1:]].sum(), T-1
def loss(W,gf=None):
    s=n=0
    for ids in held: a,b=fwd(W,np.array(ids),gf); s+=a; n+=b
    return s/n
col={(l,j):[] for l in range(L) for j in (0,1)}; col[(L,0)]=[]
for ids in cal: fwd(W,np.array(ids),collect=col)
S={k:np.concatenate(v) for k,v in col.items()}
# the code's score: E|h/rms| of state l times |g| of both norms of block l (final: final norm)
score=np.zeros(H)
for l in range(L+1):
    h=S[(l,0)]; e=np.abs(h/np.sqrt((h*h).mean(-1,keepdims=True))).mean(0)
    gs=[W[f'model.layers.{l}.input_layernorm.weight'],W[f'model.layers.{l}.post_attention_layernorm.weight']] if l<L else [W['model.norm.weight']]
    for g in gs: score+=e*np.abs(g)
tn=np.sqrt((S[(5,0)]**2).sum(-1)); print('token norms at state 5: median %.1f max %.1f (p99 %.1f)'%(np.median(tn),tn.max(),np.percentile(tn,99)))
base=loss(W); print('unpruned held-out loss %.4f'%base)
def surgery(rem):
    keep=np.setdiff1d(np.arange(H),rem); V={}
    for k,w in W.items():
        if k=='model.embed_tokens.weight': V[k]=w[:,keep]
        elif k.endswith(('q_proj.weight','k_proj.weight','v_proj.weight','gate_proj.weight','up_proj.weight')): V[k]=w[:,keep]
        elif k.endswith(('o_proj.weight','down_proj.weight')): V[k]=w[keep,:]
        elif k.endswith('norm.weight'): V[k]=w[keep]
        else: V[k]=w
    return V,keep
def factors(keep,kind,Hn):
    f=[]
    for l in range(L+1):
        h=S[(l,0)]
        if kind=='sum': rho=(h[:,keep]**2).sum()/(h**2).sum()
        elif kind=='mean': rho=((h[:,keep]**2).sum(-1)/(h**2).sum(-1)).mean()
        else: rho=Hn/H
        f.append(np.sqrt(rho*H/Hn))
    return f
for k in KS:
    rem=np.argsort(score,kind='stable')[:k]; V,keep=surgery(rem); Hn=H-k
    res=[]
    for kind in ['sum','mean','none']:
        f=factors(keep,kind,Hn)
        r=loss(V,f); res.append((kind,r,np.mean(f)))
    print('remove %d: '%k+'  '.join('%s: loss %.4f (mean factor %.4f)'%x for x in res)); sys.stdout.flush()
