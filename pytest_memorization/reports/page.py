"""The index.html page's own style and script (allowed by hash in its Content-Security-Policy).

The script keeps a large report fast: the page opens with the first ``PAGE`` cards (failing items
first); every item's verdict and search text, and the other cards' HTML, wait in a
``<script type="application/json">`` blocks (``#cards``: verdicts, search text and the first cards'
HTML; ``.more``: the rest, a few hundred cards each, so the parser can yield and paint between them)
that the script reads after the first paint;
more cards are added as the reader scrolls (an IntersectionObserver on ``#end``); the verdict filter
and the search box (item, prompt or work) select from all items, not only those drawn. It records
the page's paint timings and JS heap on ``<body>`` (``data-first-paint``, ``data-first-contentful-paint``,
``data-js-heap-mb``, ``data-cards-shown``) for ``bench/scale.py``, and counts images that fail to load.
"""

PAGE = 50  # cards in the page as it opens, and per scroll step; SCRIPT's PAGE is the same number

CSS = """
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;padding:16px;color:#1b1b1b;background:#fafafa}
h1{margin:0 0 8px;font-size:22px}[hidden]{display:none!important}code{font-size:12px}
.banner{padding:10px 14px;margin:8px 0;border-radius:6px;font-weight:600}
.incomplete{background:#fff3cd;border:1px solid #d39e00}.broken{background:#fde2e1;border:1px solid #c0392b}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
.run{display:flex;flex-wrap:wrap;gap:4px 18px;margin:6px 0}.run b{color:#555;font-weight:600}.filters{margin:12px 0;display:flex;gap:14px;flex-wrap:wrap}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:700;font-size:12px}
.b-error{background:#6c3483}.b-fail{background:#c0392b}.b-warn{background:#b9770e}.b-pass{background:#1e8449}
.b-incomplete{background:#7f8c8d}
.row{background:#fff;border:1px solid #ddd;border-left:6px solid #aaa;border-radius:6px;margin:10px 0;padding:10px}
.v-error{border-left-color:#6c3483}.v-fail{border-left-color:#c0392b}.v-warn{border-left-color:#b9770e}
.v-pass{border-left-color:#1e8449}.rowhead{display:flex;gap:10px;align-items:center;flex-wrap:wrap;margin-bottom:8px}
.body{display:flex;gap:16px;flex-wrap:wrap}.imgs{display:flex;gap:8px}figure{margin:0;text-align:center}
figure img,.ph{width:192px;height:192px;object-fit:contain;background:#eee;border:1px solid #ccc;display:block}
img.thumb{image-rendering:pixelated}.ph{display:flex;align-items:center;justify-content:center;padding:8px;
color:#555;font-size:12px;word-break:break-all;text-align:center}figcaption{font-size:12px;color:#555}
.info{flex:1;min-width:320px}.prompt{white-space:pre-wrap;background:#f4f4f4;padding:4px 6px;border-radius:4px}
.crossed{background:#fde2e1;font-weight:700}.tok{background:#e8eaf6;border-radius:3px;padding:0 4px;margin-right:4px}
svg{background:#fff;border:1px solid #ddd}
.heatwrap{position:relative;width:192px;height:192px}.heatwrap svg.heat,.heatwrap svg.detmap{position:absolute;left:0;top:0;
width:192px;height:192px;background:none;border:1px solid #ccc;pointer-events:auto}
.strip{display:flex;gap:6px;flex-wrap:wrap;margin-top:8px}.strip figure img,.strip .ph{width:88px;height:88px}
.strip figure{border-top:4px solid #aaa;padding-top:2px}.s-error{border-top-color:#6c3483!important}
.s-fail{border-top-color:#c0392b!important}.s-warn{border-top-color:#b9770e!important}.s-pass{border-top-color:#1e8449!important}
#q{padding:2px 6px;min-width:260px}.seeds td{font-size:12px}.legend{font-size:11px;color:#555;max-width:192px}
"""

SCRIPT = """
(function(){
var PAGE=50,body=document.body,main=document.getElementById('results'),data=null,first=[],list=[],shown=0,bad=0;
function count(){document.getElementById('shown').textContent=String(list.length);}
function broken(n){bad+=n;if(bad){var b=document.getElementById('broken');b.textContent=bad+' image(s) failed to load: '+
'keep index.html inside its report folder, next to images/ and works/.';b.hidden=false;}
body.setAttribute('data-broken-count',String(bad));}
function more(){if(!data){return;}var end=Math.min(list.length,shown+PAGE),html='';
function flush(){if(html){main.insertAdjacentHTML('beforeend',html);html='';}}
for(var k=shown;k<end;k++){var i=list[k];if(i<first.length){flush();main.appendChild(first[i]);}else{html+=data.html[i-first.length];}}
flush();shown=end;body.setAttribute('data-cards-shown',String(main.children.length));}
function apply(){if(!data){return;}var on={},q=document.getElementById('q').value.trim().toLowerCase();
document.querySelectorAll('input.vf').forEach(function(c){on[c.value]=c.checked;});list=[];
for(var i=0;i<data.meta.length;i++){var m=data.meta[i];if(on[m[0]]&&(!q||m[1].indexOf(q)>=0)){list.push(i);}}
main.textContent='';shown=0;more();count();}
function init(){data=JSON.parse(document.getElementById('cards').textContent);
document.querySelectorAll('script.more').forEach(function(el){data.html=data.html.concat(JSON.parse(el.textContent));});
first=Array.prototype.slice.call(main.querySelectorAll('section.row'));
for(var i=0;i<data.meta.length;i++){list.push(i);}shown=first.length;count();
body.setAttribute('data-cards-shown',String(first.length));
if('IntersectionObserver' in window){new IntersectionObserver(function(es){if(es[0].isIntersecting){more();}},
{rootMargin:'1500px'}).observe(document.getElementById('end'));}
else{window.addEventListener('scroll',function(){if(window.innerHeight+window.scrollY>document.body.offsetHeight-1500){more();}});}
document.getElementById('q').addEventListener('input',apply);apply();}
document.addEventListener('change',function(e){if(e.target.classList.contains('vf')){apply();}});
document.addEventListener('error',function(e){if(e.target.tagName==='IMG'&&e.target.closest('#results')){broken(1);}},true);
window.addEventListener('load',function(){var n=0,imgs=document.images;
for(var i=0;i<imgs.length;i++){if(!(imgs[i].complete&&imgs[i].naturalWidth>0)){n++;}}
body.setAttribute('data-images',String(imgs.length));bad=0;broken(n);
var t=performance.timing;body.setAttribute('data-dom-ready',String(t.domContentLoadedEventEnd-t.navigationStart));
if(performance.memory){body.setAttribute('data-js-heap-mb',(performance.memory.usedJSHeapSize/1048576).toFixed(1));}});
function paint(p){body.setAttribute('data-'+p.name,String(Math.round(p.startTime)));}
if('PerformanceObserver' in window){try{new PerformanceObserver(function(l){l.getEntries().forEach(paint);})
.observe({type:'paint',buffered:true});}catch(x){}}
requestAnimationFrame(function(){body.setAttribute('data-first-frame',String(Math.round(performance.now())));});
setTimeout(init,0);})();
"""

