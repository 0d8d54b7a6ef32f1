// A generation loop over the conformance suite's scripted model, for the tests.
import { Session } from "../src";
import { stepInputs } from "../conformance/model";

export const SHAPE = { vocab: 2048, layers: 2, heads: 4, kvBase: 8 };

export async function generate(
  session: Session,
  steps: number,
  firstToken = 1,
  onStep?: (i: number) => Promise<void> | void,
): Promise<number[]> {
  const tokens: number[] = [];
  let prev = firstToken;
  for (let i = 0; i < steps; i++) {
    if (onStep) await onStep(i);
    const x = stepInputs(SHAPE, 7, session.stepIndex, prev);
    prev = (await session.step(x.logits, { data: x.attention, shape: x.attentionShape })).token;
    tokens.push(prev);
  }
  return tokens;
}
