/** What replaces a secret wherever a config is shown or shared. */
export const SECRET_MASK = '********';
