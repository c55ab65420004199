import json,statistics as st,os
R='bench/results/routing/at-fb3d395/'
ks=['ACC','BWT','heldout_ACC','multihop_ACC','acquisition_vs_ceiling','general_loss','kl_drift']
def load(p): return json.load(open(p))['metrics'] if os.path.exists(p) else None
def ms(xs): return f"{st.mean(xs):.3f}" + (f" ± {st.stdev(xs):.3f}" if len(xs)>1 else "")
rows=[('sleep-nodream (default)',lambda s:R+f'sleep-nodream-s{s}.json'),('sleep (default)',lambda s:R+f'sleep-s{s}.json')]
for tag,name in [('nodrift','no drift budget'),('distill','consolidation=distill'),('lowlr','lr 7.5e-4'),('budget10','drift_budget 0.1'),('writermodel','writer=model'),('routed','writer=routed'),('routed10','writer=routed, drift_budget 0.1')]:
    rows.append((name,lambda s,t=tag:f'bench/results/dream-stop26/{t}-s{s}.json'))
print('| variant | seeds | '+' | '.join(ks)+' | Δ vs sleep (ACC / held-out / multi-hop) | Δ vs sleep-nodream (ACC / held-out / multi-hop) |')
print('|'+'---|'*(len(ks)+4))
for name,f in rows:
    seeds=[s for s in range(5) if load(f(s))]
    m=[load(f(s)) for s in seeds]
    b=[load(R+f'sleep-s{s}.json') for s in seeds]; n=[load(R+f'sleep-nodream-s{s}.json') for s in seeds]
    d=lambda ref,k: ms([x[k]-y[k] for x,y in zip(m,ref)])
    print(f"| {name} | {seeds[0]}–{seeds[-1]} | "+' | '.join(ms([x[k] for x in m]) for k in ks)+f" | {d(b,'ACC')} / {d(b,'heldout_ACC')} / {d(b,'multihop_ACC')} | {d(n,'ACC')} / {d(n,'heldout_ACC')} / {d(n,'multihop_ACC')} |")
