/**
 * Budget-conditioned reasoning: the thinking budget a request asks for is written into the prompt as a system
 * line, the same text in RL training and at inference, so one adapter serves several budgets.
 */
export const budgetSystemLine = (budget: number): string => `Thinking budget: ${budget} tokens.`;

/**
 * The default buckets RL trains and the server's reasoning_effort maps onto. Sized for the embedded model's
 * synthetic world: a concise trace of a hard (4–8 step) item takes 44–86 thinking tokens, a verbose one 100–560.
 */
export const DEFAULT_BUDGETS = [96, 160, 256] as const;
